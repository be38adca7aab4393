"""An MLflow model as a :class:`~lifecycle.inference.Predictor`: what the service and the promotion gate load.

in: an MLflow model (``models:/name/3``, ``models:/name@alias``, ``runs:/<id>/model``, a local
MLflow model folder) whose artifacts carry the model folder's sidecar as ``extra_files/model.json``
(as :mod:`tracking.flavours` logs it), from the store :func:`tracking.store.tracking_uri` names.
out: a Predictor that answers exactly as one loaded from ``models/best`` does.

:func:`load_model_source` is the service's loader: a model folder goes to
:func:`lifecycle.inference.load_predictor` (the pipeline library, which knows no MLflow), an
MLflow model comes here. Not imported by any stage: changing how MLflow models load reruns
nothing.

Device: an exported (pt2) model records the device it was traced on in its graph, not only in
its weights (:func:`place_exported`); a model that cannot be placed is an error, not a silent
fallback.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from lifecycle.core.errors import UserError
from lifecycle.inference import (
    ModelIdentity,
    Predictor,
    canonical_device,
    default_device,
    load_predictor,
    require_device,
    tensor_devices,
    weights_digest,
)
from lifecycle.models import SIDECAR_FILE, ModelSpec

# A model source with one of these prefixes is an MLflow model URI, not a models/ folder.
MLFLOW_URI_PREFIXES = ("models:/", "runs:/", "file:", "mlflow-artifacts:", "s3://", "gs://", "wasbs://", "abfss://",
                       "hdfs://", "dbfs:/", "http://", "https://")
MLFLOW_SIDECAR = f"extra_files/{SIDECAR_FILE}"  # where mlflow.pytorch.log_model(extra_files=[...]) puts it
EXPORTED_FILE = "model.pt2"  # mlflow.pytorch's pt2 format: a torch.export archive in the model's data/


def is_mlflow_source(source: str | Path) -> bool:
    """An MLflow URI, or a local folder holding an MLflow model (an ``MLmodel`` file)."""
    text = str(source)
    return text.startswith(MLFLOW_URI_PREFIXES) or (Path(text) / "MLmodel").is_file()


def load_model_source(source: str | Path | None = None, device: torch.device | None = None) -> Predictor:
    """``source`` (default ``models/best``): a model folder, or an MLflow model."""
    if source not in (None, "") and is_mlflow_source(source):
        return load_mlflow_model(str(source), device or default_device())
    return load_predictor(source, device)


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


def load_mlflow_model(uri: str, device: torch.device) -> Predictor:
    """Download an MLflow model, read its sidecar, load its weights (pt2 format: nothing unpickled)."""
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    from tracking.store import tracking_uri

    if not mlflow.tracking.is_tracking_uri_set():
        mlflow.set_tracking_uri(tracking_uri())
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
        if exported.is_file() and tensor_devices(model) != {canonical_device(device)}:
            model = place_exported(exported, device)  # the archive mlflow just checked
        elif isinstance(model, torch.nn.Module):
            model = model.to(device)
        require_device(model, device, uri)
        meta = yaml.safe_load((local / "MLmodel").read_text()) if (local / "MLmodel").is_file() else {}
        weights = next((p for p in (local / "data").glob("model.*") if p.is_file()), None) if (local / "data").is_dir() else None
        digest = weights_digest(weights) if weights else None
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
    """(registered name, version) of ``models:/name/N``; ``models:/name@alias`` gives (name, None): the
    service resolves an alias to its version before loading (:mod:`serving.model_source`), so the
    version shown is the one that answers, never an alias that may have moved since."""
    if not uri.startswith("models:/"):
        return None, None
    rest = uri[len("models:/"):].strip("/")
    name, _, version = rest.partition("@")[0].partition("/")
    return name, version if version.isdigit() else None
