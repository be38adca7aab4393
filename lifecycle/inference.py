"""Inference: load the selected model and classify images, for the service and for batch runs.

in: a model folder (``models/best``: ``model.pt`` state_dict + ``model.json`` sidecar); images as
bytes or files.  out: class probabilities, one row per image, in the sidecar's class order.
(MLflow models are loaded into the same :class:`Predictor` outside the pipeline library, by
:mod:`tracking.mlflow_model`: no stage's result depends on how MLflow is read.)

The service (``serving/``) and the ``predict`` stage (:mod:`lifecycle.prediction`) both call
:meth:`Predictor.preprocess` and :meth:`Predictor.predict`: the first goes through
:mod:`lifecycle.core.images` exactly as ``featurize`` did for training (decode, EXIF
orientation, any mode to RGB, one resize), the second through
:func:`lifecycle.models.class_probabilities`, the forward path ``evaluate`` scores models
with, so a model answers in production exactly as it was measured.

Device: CUDA when present, else CPU. A loaded model must use that one device throughout
(weights, buffers, constants and, for an exported model, its graph; see :func:`require_device`),
and the forward path puts the inputs there, so model and inputs never meet on different
devices; a model that cannot be placed is an error, not a silent fallback.
"""
from __future__ import annotations

import dataclasses
import hashlib
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
    PenultimateTap,
    WEIGHTS_FILE,
    ModelSpec,
    class_probabilities,
    load_model,
)


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
        self.tap = PenultimateTap(model)  # the embeddings predict_and_embed returns

    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    def preprocess(self, source: bytes | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Bytes or a file to the (S, S, 3) uint8 array training used; raises ImageDecodeError."""
        return load_array(source, self.spec.image_size, max_pixels=max_pixels)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C), float64, for uint8 images (N, S, S, 3)."""
        return class_probabilities(self.model, images, self.spec, self.device, batch_size=max(1, len(images)))

    def predict_and_embed(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict`, and the penultimate-layer embeddings of the same forward pass (None if unavailable)."""
        return self.tap.embed(lambda: self.predict(images))

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


def load_predictor(source: str | Path | None = None, device: torch.device | None = None) -> Predictor:
    """Load the model folder ``source`` (default ``models/best``)."""
    device = device or default_device()
    folder = Path(paths.BEST_MODEL if source in (None, "") else source)
    if not folder.is_absolute() and not folder.exists():
        folder = paths.ROOT / folder
    if not (folder / SIDECAR_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise UserError(
            f"model '{paths.relative(folder)}' has no {SIDECAR_FILE} and {WEIGHTS_FILE}; train and select a model "
            f"first (dvc repro select), or name a folder that holds both."
        )
    model, spec = load_model(folder, device=device)
    require_device(model, device, paths.relative(folder))
    digest = weights_digest(folder / WEIGHTS_FILE)
    info = spec.info or {}
    identity = ModelIdentity(
        name=str(info.get("name") or info.get("stage") or spec.architecture),
        version=str(info.get("version") or info.get("git_commit") or info.get("commit") or f"sha256:{digest}"),
        source=paths.relative(folder),
        stage=info.get("stage"),
        digest=digest,
    )
    return Predictor(model, spec, identity, device)


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
    return {canonical_device(d) for d in found}


def require_device(model: Any, device: torch.device, source: str) -> None:
    """Raise unless every tensor and graph device of ``model`` is ``device``: inputs go there too."""
    devices = tensor_devices(model)
    if devices - {canonical_device(device)}:
        raise UserError(
            f"the model '{source}' did not land on {device}: it also uses {', '.join(sorted(map(str, devices)))}."
        )


def canonical_device(device: torch.device | str) -> torch.device:
    """``cuda`` and ``cuda:0`` are the same device when 0 is the current one."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def weights_digest(path: Path) -> str:
    """sha256 of a weights file, first 16 hex digits: which weights answered."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:16]
