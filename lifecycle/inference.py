"""Inference: load the selected model and classify images, for the service and for batch runs.

in: a model folder (``models/best``: ``model.pt`` state_dict + ``model.json`` sidecar) or an
MLflow model (``models:/name@alias``, ``models:/name/3``, ``runs:/<id>/model``, a local MLflow
model folder) whose artifacts carry the same sidecar as ``extra_files/model.json``; images as
bytes or files.  out: class probabilities, one row per image, in the sidecar's class order.

The service (``serving/``) and the ``predict`` stage (:mod:`lifecycle.prediction`) both call
:meth:`Predictor.preprocess` and :meth:`Predictor.predict`: the first goes through
:mod:`lifecycle.core.images` exactly as ``featurize`` did for training (decode, EXIF
orientation, any mode to RGB, one resize), the second through
:func:`lifecycle.models.class_probabilities`, the forward path ``evaluate`` scores models
with, so a model answers in production exactly as it was measured.

Device: CUDA when present, else CPU. A loaded model must use that one device throughout
(weights, buffers, constants and, for an exported pt2 model, its graph; see
:func:`place_exported` and :func:`require_device`), and the forward path puts the inputs
there, so model and inputs never meet on different devices; a model that cannot be placed
is an error, not a silent fallback.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifecycle.core import paths
from lifecycle.core.errors import UserError
from lifecycle.core.images import DEFAULT_MAX_PIXELS, load_array
from lifecycle.models import (
    SIDECAR_FILE,
    WEIGHTS_FILE,
    ModelSpec,
    class_probabilities,
    load_model,
)

# A model source with one of these prefixes is an MLflow model URI, not a models/ folder.
MLFLOW_URI_PREFIXES = ("models:/", "runs:/", "file:", "mlflow-artifacts:", "s3://", "gs://", "wasbs://", "abfss://",
                       "hdfs://", "dbfs:/", "http://", "https://")
MLFLOW_SIDECAR = f"extra_files/{SIDECAR_FILE}"  # where mlflow.pytorch.log_model(extra_files=[...]) puts it
EXPORTED_FILE = "model.pt2"  # mlflow.pytorch's pt2 format: a torch.export archive in the model's data/


@dataclasses.dataclass(frozen=True)
class ModelIdentity:
    """Which model answered: shown by /predict, /health and /metadata."""

    name: str               # registered model name, else the sidecar's info.name or info.stage
    version: str            # registry version, else info.version / info.git_commit, else a weights digest
    source: str             # the folder or URI it was loaded from
    stage: str | None       # the pipeline stage that trained it (sidecar info.stage)
    digest: str | None      # sha256 of the weights file, first 16 hex digits

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Predictor:
    """A loaded model with its sidecar: uint8 images in, class probabilities out."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], spec: ModelSpec, identity: ModelIdentity,
                 device: torch.device) -> None:
        self.model = model
        self.spec = spec
        self.identity = identity
        self.device = device

    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    def preprocess(self, source: bytes | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Bytes or a file to the (S, S, 3) uint8 array training used; raises ImageDecodeError."""
        return load_array(source, self.spec.image_size, max_pixels=max_pixels)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C), float64, for uint8 images (N, S, S, 3)."""
        return class_probabilities(self.model, images, self.spec, self.device, batch_size=max(1, len(images)))

    def describe(self, probabilities: np.ndarray) -> dict[str, Any]:
        """One image's answer: the seed's ``prediction`` (class index), ``label``, ``probabilities``."""
        index = int(np.argmax(probabilities))
        return {
            "prediction": index,
            "label": self.classes[index],
            "probabilities": {name: round(float(p), 6) for name, p in zip(self.classes, probabilities)},
        }


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_mlflow_source(source: str | Path) -> bool:
    """An MLflow URI, or a local folder holding an MLflow model (an ``MLmodel`` file)."""
    text = str(source)
    return text.startswith(MLFLOW_URI_PREFIXES) or (Path(text) / "MLmodel").is_file()


def load_predictor(source: str | Path | None = None, device: torch.device | None = None) -> Predictor:
    """Load ``source`` (default ``models/best``): a model folder or an MLflow model URI."""
    device = device or default_device()
    source = paths.BEST_MODEL if source in (None, "") else source
    if is_mlflow_source(source):
        return _load_mlflow(str(source), device)
    folder = Path(source)
    if not folder.is_absolute() and not folder.exists():
        folder = paths.ROOT / folder
    if not (folder / SIDECAR_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise UserError(
            f"model '{paths.relative(folder)}' has no {SIDECAR_FILE} and {WEIGHTS_FILE}; train and select a model "
            f"first (dvc repro select) or point at an MLflow model URI such as models:/name@alias."
        )
    model, spec = load_model(folder, device=device)
    require_device(model, device, paths.relative(folder))
    digest = _digest(folder / WEIGHTS_FILE)
    info = spec.info or {}
    identity = ModelIdentity(
        name=str(info.get("name") or info.get("stage") or spec.architecture),
        version=str(info.get("version") or info.get("git_commit") or info.get("commit") or f"sha256:{digest}"),
        source=paths.relative(folder),
        stage=info.get("stage"),
        digest=digest,
    )
    return Predictor(model, spec, identity, device)


def place_exported(path: Path, device: torch.device) -> torch.nn.Module:
    """A ``torch.export`` archive (``.pt2``) as a module whose weights, constants and graph all use ``device``.

    An exported program records the device it was traced on, not only in its weights but in
    its graph (``torch.ones(..., device=x.device)`` becomes ``device=cpu``) and in lifted
    constants that are plain attributes: ``module.to(device)`` moves the weights and leaves
    those behind. ``move_to_device_pass`` rewrites all three.
    """
    from torch.export.passes import move_to_device_pass

    try:
        program = move_to_device_pass(torch.export.load(str(path)), device)
    except Exception as error:
        raise UserError(f"cannot move the exported model {path} to {device}: {str(error).splitlines()[0]}") from None
    return program.module()


def tensor_devices(model: Any) -> set[torch.device]:
    """Every device ``model`` uses: parameters, buffers, tensor attributes, and devices named in an FX graph."""
    if not isinstance(model, torch.nn.Module):
        return set()
    found = {tensor.device for tensor in [*model.parameters(), *model.buffers()]}
    for module in model.modules():
        found |= {value.device for value in vars(module).values() if isinstance(value, torch.Tensor)}
        graph = getattr(module, "graph", None)
        for node in getattr(graph, "nodes", ()):
            named = [node.kwargs.get("device"), *node.args]
            found |= {torch.device(d) for d in named if isinstance(d, torch.device)}
    return {_canonical(d) for d in found}


def require_device(model: Any, device: torch.device, source: str) -> None:
    """Raise unless every tensor and graph device of ``model`` is ``device``: inputs go there too."""
    devices = tensor_devices(model)
    if devices - {_canonical(device)}:
        raise UserError(
            f"the model '{source}' did not land on {device}: it also uses {', '.join(sorted(map(str, devices)))}."
        )


def _canonical(device: torch.device | str) -> torch.device:
    """``cuda`` and ``cuda:0`` are the same device when 0 is the current one."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


def _ensure_tracking_uri() -> None:
    """The house default store (sqlite:///mlflow.db at the repository root) unless MLFLOW_TRACKING_URI is set."""
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(f"sqlite:///{paths.ROOT / 'mlflow.db'}")


def _load_mlflow(uri: str, device: torch.device) -> Predictor:
    """Download an MLflow model, read its sidecar, load its weights (pt2 format: nothing unpickled)."""
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    _ensure_tracking_uri()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per download fills server logs
    scratch = Path(tempfile.mkdtemp(prefix="serve-mlflow-"))
    try:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(scratch)))
        except (MlflowException, OSError) as error:
            raise UserError(f"cannot fetch the MLflow model '{uri}': {str(error).splitlines()[0]}") from None
        sidecar = local / MLFLOW_SIDECAR
        if not sidecar.is_file():
            raise UserError(
                f"the MLflow model '{uri}' has no {MLFLOW_SIDECAR}; log it with "
                f"extra_files=['models/best/{SIDECAR_FILE}'] so the service knows its classes and preprocessing."
            )
        spec = ModelSpec.from_dict(json.loads(sidecar.read_text()))
        try:
            model = mlflow.pytorch.load_model(str(local))  # for pt2: first checks the archive is pickle-free
        except MlflowException as error:
            raise UserError(f"cannot load the MLflow model '{uri}': {str(error).splitlines()[0]}") from None
        exported = local / "data" / EXPORTED_FILE
        if exported.is_file() and tensor_devices(model) != {_canonical(device)}:
            model = place_exported(exported, device)  # the archive mlflow just checked
        elif isinstance(model, torch.nn.Module):
            model = model.to(device)
        require_device(model, device, uri)
        meta = yaml.safe_load((local / "MLmodel").read_text()) if (local / "MLmodel").is_file() else {}
        weights = next((p for p in (local / "data").glob("model.*") if p.is_file()), None) if (local / "data").is_dir() else None
        digest = _digest(weights) if weights else None
        name, version = _registry_identity(uri)
        info = spec.info or {}
        identity = ModelIdentity(
            name=name or str(info.get("name") or info.get("stage") or spec.architecture),
            version=version or str(meta.get("run_id") or meta.get("model_id") or info.get("git_commit") or f"sha256:{digest}"),
            source=uri,
            stage=info.get("stage"),
            digest=digest,
        )
        return Predictor(model, spec, identity, device)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _registry_identity(uri: str) -> tuple[str | None, str | None]:
    """(registered name, version) for ``models:/name@alias`` or ``models:/name/N``; else (None, None)."""
    if not uri.startswith("models:/"):
        return None, None
    from mlflow import MlflowClient

    rest = uri[len("models:/"):].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        try:
            return name, str(MlflowClient().get_model_version_by_alias(name, alias).version)
        except Exception:  # identity is informative; a registry hiccup must not stop a model that loaded
            return name, None
    name, _, version = rest.partition("/")
    return name, version if version.isdigit() else None
