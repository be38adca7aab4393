"""Model architectures, and the one format every model is saved and loaded in.

A model on disk is a folder with ``model.pt`` (a ``state_dict``, loaded with
``torch.load(weights_only=True)``, so nothing is ever unpickled) and ``model.json``, the
sidecar from which any consumer rebuilds it: architecture and its arguments, class names,
image size and normalisation. :func:`build_model` is the single place that turns a spec
into an ``nn.Module``, and :func:`predict_logits` the one forward path: evaluate, predict,
the service, frozen features and the training loop's validation all run a model through it.

Architectures:
- ``seed_cnn``: the seed's CNN (conv 3x3 -> ReLU -> max-pool, then one linear layer whose
  input size follows from the image size); ``channels`` lists the conv blocks.
- any torchvision classifier by name (``resnet18``, ``vgg16``, ``mobilenet_v3_small`` ...),
  with its last classification layer replaced by one with ``num_classes`` outputs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lifecycle.core import numerics
from lifecycle.core.errors import UserError
from lifecycle.core.images import IMAGENET_MEAN, IMAGENET_STD
from lifecycle.core.io import write_bytes_atomic, write_json_atomic
from lifecycle.core.paths import relative
from lifecycle.core.progress import progress

WEIGHTS_FILE = "model.pt"
SIDECAR_FILE = "model.json"


class SeedCNN(nn.Module):
    """The seed's CNN, generalised to any image size and a stack of conv blocks."""

    def __init__(self, image_size: int = 64, num_classes: int = 2, channels: tuple[int, ...] = (32,)) -> None:
        super().__init__()
        if image_size % (2 ** len(channels)) != 0:
            raise UserError(
                f"featurize.image_size {image_size} must be divisible by {2 ** len(channels)} for seed_cnn with "
                f"{len(channels)} pooling blocks (train.channels)."
            )
        blocks: list[nn.Module] = []
        in_channels = 3
        for out_channels in channels:
            blocks += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=2, stride=2),
            ]
            in_channels = out_channels
        self.conv = nn.Sequential(*blocks)
        side = image_size // (2 ** len(channels))
        self.fc = nn.Linear(in_channels * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fc(x.flatten(1))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild and feed a model; saved as the sidecar ``model.json``."""

    architecture: str                     # "seed_cnn" or a torchvision.models classifier name
    classes: list[str]                    # class names in output-index order
    image_size: int                       # square input side, pixels
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    arguments: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. {"channels": [32]}
    info: dict[str, Any] = dataclasses.field(default_factory=dict)       # provenance: stage, params, metrics

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k in ("mean", "std") else v) for k, v in data.items() if k in known})


def torchvision_classifiers() -> list[str]:
    import torchvision  # on first use: it costs a second and a half to import, and seed_cnn never needs it

    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_architecture(name: str, key: str, allow_seed_cnn: bool) -> None:
    """Fail with a sentence naming ``key`` unless ``name`` is seed_cnn (where allowed) or a torchvision classifier."""
    if allow_seed_cnn and name == "seed_cnn":
        return
    if name not in torchvision_classifiers():
        examples = "seed_cnn or " if allow_seed_cnn else ""
        raise UserError(
            f"params.yaml: '{key}' is '{name}', which is not {examples}a torchvision.models classifier "
            f"(for example resnet18, vgg16, mobilenet_v3_small)."
        )


def _head_slot(model: nn.Module) -> tuple[nn.Module, str | int]:
    """Where the last classification layer lives: (its parent module, its attribute or index)."""
    for attribute in ("fc", "classifier", "head", "heads"):
        head = getattr(model, attribute, None)
        if isinstance(head, nn.Linear):
            return model, attribute
        if isinstance(head, nn.Sequential):
            for index in range(len(head) - 1, -1, -1):
                if isinstance(head[index], nn.Linear):
                    return head, index
    raise UserError(f"cannot find the classification layer of {type(model).__name__} to replace.")


def head_layer(model: nn.Module) -> nn.Linear:
    """The last classification layer (``fc`` of a ResNet, ``classifier[6]`` of a VGG, ...)."""
    parent, key = _head_slot(model)
    return parent[key] if isinstance(key, int) else getattr(parent, key)


def set_head(model: nn.Module, layer: nn.Module) -> nn.Module:
    """Put ``layer`` where the last classification layer was (``nn.Identity()`` exposes the features)."""
    parent, key = _head_slot(model)
    if isinstance(key, int):
        parent[key] = layer
    else:
        setattr(parent, key, layer)
    return model


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the last linear layer of a torchvision classifier for a ``num_classes`` one."""
    return set_head(model, nn.Linear(head_layer(model).in_features, num_classes))


def build_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialised model for ``spec`` (weights are loaded separately)."""
    num_classes = len(spec.classes)
    if spec.architecture == "seed_cnn":
        channels = tuple(spec.arguments.get("channels", (32,)))
        return SeedCNN(spec.image_size, num_classes, channels)
    if spec.architecture not in torchvision_classifiers():
        raise UserError(
            f"unknown architecture '{spec.architecture}'; use seed_cnn or a torchvision.models classifier such as resnet18."
        )
    return replace_head(torchvision_model(spec.architecture), num_classes)


def torchvision_model(architecture: str, weights: Any = None) -> nn.Module:
    """torchvision's ``architecture`` (``weights``: None, or its ImageNet weights enum).

    The two classifiers with auxiliary heads (googlenet, inception_v3) come in their
    single-output variant, so every model returns plain logits in training as in evaluation.
    """
    import torchvision

    extra = {"aux_logits": False} if architecture in ("googlenet", "inception_v3") else {}
    return torchvision.models.get_model(architecture, weights=weights, **extra)


def check_image_size(model: nn.Module, architecture: str, image_size: int) -> None:
    """Fail with a sentence naming ``featurize.image_size`` unless ``model`` takes that size.

    One forward pass of a blank image: the honest test for any architecture (a VGG pools
    five times, a ViT wants exactly 224, an Inception at least 75).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    except Exception as error:  # noqa: BLE001 - any failure here means "this size does not fit"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"featurize.image_size {image_size} does not fit architecture {architecture} ({reason[:160]})."
        ) from None
    finally:
        model.train(was_training)


def save_model(model: nn.Module, spec: ModelSpec, folder: Path) -> None:
    """Write ``model.pt`` (state_dict) and ``model.json`` (sidecar) atomically into ``folder``.

    The sidecar's ``info.numerics`` is :func:`lifecycle.core.numerics.determinants` on the
    model's device: what its bytes depend on, nothing of the machine (that goes to MLflow).
    """
    module = model.module if hasattr(model, "module") else model  # unwrap DistributedDataParallel
    device = next(module.parameters()).device.type
    spec = dataclasses.replace(spec, info={**spec.info, "numerics": numerics.determinants(device)})
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    # Serialise in memory: torch.save names the zip's inner folder after the file it writes,
    # and the temporary file's random name would make identical weights differ in bytes.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(buffer.getvalue(), Path(folder) / WEIGHTS_FILE)
    write_json_atomic(spec.to_dict(), Path(folder) / SIDECAR_FILE)


def load_spec(folder: Path) -> ModelSpec:
    sidecar = Path(folder) / SIDECAR_FILE
    if not sidecar.is_file():
        raise UserError(f"{relative(sidecar)} does not exist; train and select a model first (dvc repro).")
    return ModelSpec.from_dict(json.loads(sidecar.read_text()))


def load_model(folder: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild the model in ``folder`` from its sidecar and weights, in eval mode."""
    spec = load_spec(folder)
    model = build_model(spec)
    state = torch.load(Path(folder) / WEIGHTS_FILE, map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), spec


# ----------------------------------------------------------------------------- the forward path


def to_model_input(
    images: np.ndarray | torch.Tensor,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 images (N, H, W, 3) or (N, 3, H, W) to the normalised float batch a model takes."""
    batch = torch.as_tensor(images)
    if batch.ndim == 3:
        batch = batch.unsqueeze(0)
    if batch.shape[-1] == 3 and batch.shape[1] != 3:
        batch = batch.permute(0, 3, 1, 2)
    batch = batch.float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    return (batch - mean_t) / std_t


def image_preparer(mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
    """The batch step for images: uint8 (N, 3, H, W) or (N, H, W, 3) to the normalised float batch."""
    return lambda batch: to_model_input(batch, mean, std)


def predict_logits(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    desc: str | None = None,
) -> torch.Tensor:
    """The one forward path: logits (N, C), float32 on the CPU, of ``inputs`` batch by batch.

    Each batch is moved to ``device``, then ``prepare`` makes it model input (for images
    :func:`image_preparer`). ``model`` is in eval mode (:func:`load_model` returns it so, the
    training loop switches to it to validate) or an exported (pt2) module, whose mode is fixed.
    """
    chunks = []
    starts = range(0, len(inputs), batch_size)
    if desc:
        starts = progress(starts, desc=desc, total=len(starts))
    with torch.no_grad():
        for start in starts:
            chunks.append(model(prepare(inputs[start : start + batch_size].to(device))).float().cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


def class_probabilities(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray | torch.Tensor,
    spec: ModelSpec,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> np.ndarray:
    """Class probabilities (N, C), float64, of uint8 images (N, S, S, 3), by :func:`predict_logits`.

    evaluate, the predict stage and the service all call it, so a model is scored exactly as
    it answers.
    """
    if len(images) == 0:
        return np.zeros((0, len(spec.classes)))
    logits = predict_logits(model, torch.as_tensor(images), image_preparer(spec.mean, spec.std), batch_size, device)
    return torch.softmax(logits.double(), dim=1).numpy()


class PenultimateTap:
    """The input of a model's last classification layer (its penultimate embedding), per thread.

    One forward hook, registered once: while a thread is inside :meth:`capturing`, each forward
    pass it makes appends its batch's embeddings (N, width) to the list it was given; other
    threads and other callers are untouched. A model without a findable head (an exported pt2
    program) has none: :attr:`available` is False and the list stays empty.
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self._local = threading.local()
        try:
            head = head_layer(model) if isinstance(model, nn.Module) else None
        except UserError:
            head = None
        self.available = head is not None
        if head is not None:
            head.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured = getattr(self._local, "captured", None)
        if captured is not None:
            captured.append(inputs[0].detach().flatten(1).float().cpu())

    @contextlib.contextmanager
    def capturing(self) -> Iterator[list[torch.Tensor]]:
        self._local.captured = captured = []
        try:
            yield captured
        finally:
            self._local.captured = None

    def embed(self, forward: Callable[[], np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """``forward()``'s result and the embeddings (N, width) float32 it computed on the way, or None."""
        with self.capturing() as captured:
            result = forward()
        if not self.available or not captured:
            return result, None
        return result, torch.cat(captured).numpy().astype(np.float32)
