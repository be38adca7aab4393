"""Backbones for fine-tuning and transfer learning, learned or fetched offline.

There is no internet at run time, so ImageNet weights cannot be the default. ``pretrain``
learns a backbone without labels instead: each training image is turned by 0, 90, 180 or
270 degrees and the network learns to tell which (a rotation pretext task: to know which
way is up it must find ears, eyes and snouts). ``weights: imagenet`` takes torchvision's
ImageNet weights (downloaded once into torch's hub cache; the file becomes the DVC output
so ``dvc.lock`` pins it); ``weights: none`` keeps a seeded random initialisation, the
baseline that shows what pretraining buys.

``finetune`` then trains every layer (backbone and new head, each at its own learning
rate); ``transfer`` freezes everything but a new last layer, so the frozen features are
computed once (:func:`frozen_features`) and the head trains on them in seconds.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path
from typing import Literal
from urllib.error import URLError

import torch
import torchvision
from torch import nn

from lifecycle.errors import UserError
from lifecycle.models import (
    ModelSpec,
    build_model,
    check_image_size,
    head_layer,
    load_model,
    replace_head,
    save_model,
    set_head,
)
from lifecycle.params import require
from lifecycle.training import (
    Augmenting,
    check_architecture,
    check_loop_params,
    image_preparer,
    predict_logits,
)

ROTATIONS = ("rot0", "rot90", "rot180", "rot270")  # the pretext task's classes


@dataclasses.dataclass(frozen=True)
class PretrainParams:
    weights: Literal["pretext", "imagenet", "none"] = "pretext"  # where the backbone's weights come from
    epochs: int = 2             # pretext epochs
    lr: float = 0.001           # pretext Adam learning rate
    batch_size: int = 32
    weight_decay: float = 0.0
    augment: bool = True        # augment.* before the rotation

    def __post_init__(self) -> None:
        check_loop_params(self.lr, "lr", self.epochs, "epochs", self.batch_size, "batch_size")
        require(self.weight_decay >= 0, "weight_decay", f"must be 0 or more, got {self.weight_decay}")


@dataclasses.dataclass(frozen=True)
class FinetuneParams:
    architecture: str = "resnet18"  # any torchvision.models classifier
    epochs: int = 2
    batch_size: int = 32
    lr_backbone: float = 0.0001     # every pretrained layer
    lr_head: float = 0.001          # the new two-class layer
    weight_decay: float = 0.0
    augment: bool = True

    def __post_init__(self) -> None:
        check_architecture(self.architecture, allow_seed_cnn=False)
        check_loop_params(self.lr_backbone, "lr_backbone", self.epochs, "epochs", self.batch_size, "batch_size")
        check_loop_params(self.lr_head, "lr_head", self.epochs, "epochs", self.batch_size, "batch_size")
        require(self.weight_decay >= 0, "weight_decay", f"must be 0 or more, got {self.weight_decay}")


@dataclasses.dataclass(frozen=True)
class TransferParams:
    architecture: str = "resnet18"  # the seed's vgg16 works too, but is slow on CPU
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.001
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_architecture(self.architecture, allow_seed_cnn=False)
        check_loop_params(self.lr, "lr", self.epochs, "epochs", self.batch_size, "batch_size")
        require(self.weight_decay >= 0, "weight_decay", f"must be 0 or more, got {self.weight_decay}")


# ----------------------------------------------------------------------------- pretext


class RotationPretext:
    """The per-sample transform of the pretext task: augment, then turn by k * 90 degrees; label k."""

    def __init__(self, augmenting: Augmenting | None) -> None:
        self.augmenting = augmenting

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augmenting is not None:
            image, _ = self.augmenting(image, label)
        k = int(torch.randint(len(ROTATIONS), ()))
        return torch.rot90(image, k, dims=(1, 2)), torch.tensor(k, dtype=torch.int64)


def rotated_for_validation(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation for the pretext task: image i turned by (i mod 4) * 90 degrees, fixed."""
    turns = torch.arange(len(images)) % len(ROTATIONS)
    rotated = torch.stack([torch.rot90(image, int(k), dims=(1, 2)) for image, k in zip(images, turns)])
    return rotated, turns.to(torch.int64)


def pretext_spec(architecture: str, image_size: int) -> ModelSpec:
    return ModelSpec(architecture=architecture, classes=list(ROTATIONS), image_size=image_size)


# ----------------------------------------------------------------------------- imagenet


def imagenet_weights(architecture: str) -> torchvision.models.WeightsEnum:
    try:
        return torchvision.models.get_model_weights(architecture).DEFAULT
    except (ValueError, AttributeError, KeyError):
        raise UserError(
            f"pretrain.weights is imagenet but torchvision has no ImageNet weights for {architecture}; "
            "use pretext or none."
        ) from None


def imagenet_checkpoint(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torch.hub keeps the downloaded file of ``weights`` (TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def fetch_imagenet(architecture: str, image_size: int, folder: Path) -> ModelSpec:
    """Write ``architecture`` with ImageNet weights into ``folder`` (model.pt + model.json).

    torchvision's weights API downloads the file once into torch's hub cache (offline, a
    file already placed there is used). When the file loads as it is, it becomes
    ``model.pt`` byte for byte, so ``dvc.lock`` pins exactly what was downloaded; its
    sha256 is recorded in the sidecar either way.
    """
    weights = imagenet_weights(architecture)
    extra = {"aux_logits": False} if architecture in ("googlenet", "inception_v3") else {}
    try:
        model = torchvision.models.get_model(architecture, weights=weights, **extra)
    except (URLError, OSError, RuntimeError) as error:
        raise UserError(
            f"pretrain.weights is imagenet but the ImageNet weights of {architecture} are not cached and cannot be "
            f"downloaded ({type(error).__name__}); put {os.path.basename(weights.url)} into "
            f"{imagenet_checkpoint(weights).parent} or use pretrain.weights: pretext."
        ) from None
    checkpoint = imagenet_checkpoint(weights)
    categories = list(weights.meta["categories"])
    spec = ModelSpec(
        architecture=architecture,
        classes=categories,
        image_size=image_size,
        info={
            "weights": "imagenet",
            "source": weights.url,
            "file": checkpoint.name,
            "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        },
    )
    check_image_size(model, architecture, image_size)
    save_model(model, spec, folder)
    verbatim = build_model(spec)
    try:
        verbatim.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    except (RuntimeError, KeyError, ValueError):
        return spec  # keys need torchvision's fix-ups (densenet, googlenet): keep the re-saved weights
    shutil.copyfile(checkpoint, folder / "model.pt")
    return spec


# ----------------------------------------------------------------------------- finetune, transfer


def load_backbone(folder: Path, num_classes: int) -> nn.Module:
    """The pretrained model in ``folder`` with a fresh ``num_classes`` head (seed torch first)."""
    model, _ = load_model(folder)
    return replace_head(model.train(), num_classes)


def finetune_groups(model: nn.Module, lr_backbone: float, lr_head: float) -> list[dict]:
    """Adam parameter groups: the new head at ``lr_head``, every other layer at ``lr_backbone``."""
    head_ids = {id(p) for p in head_layer(model).parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    head = [p for p in model.parameters() if id(p) in head_ids]
    return [{"params": backbone, "lr": lr_backbone}, {"params": head, "lr": lr_head}]


def feature_extractor(model: nn.Module) -> nn.Module:
    """``model`` without its last layer, frozen, in eval mode: images in, penultimate features out."""
    body = set_head(model, nn.Identity())
    for parameter in body.parameters():
        parameter.requires_grad_(False)
    return body.eval()


def frozen_features(
    body: nn.Module, images: torch.Tensor, spec: ModelSpec, device: torch.device | str = "cpu", desc: str | None = None
) -> torch.Tensor:
    """Penultimate features (N, D) of uint8 images (N, 3, S, S): computed once, then cached."""
    return predict_logits(body, images, image_preparer(spec.mean, spec.std), batch_size=64, device=device, desc=desc)


@dataclasses.dataclass(frozen=True)
class FeatureScaling:
    """Standardise frozen features for training the head, then fold it into the head.

    Raw penultimate features have wildly different scales, which makes the head's
    training jumpy; the head trains on ``(x - mean) / std`` and :meth:`fold` rewrites
    it to take raw features (``W / std``, ``b - W @ (mean / std)``), so the saved model
    is still the backbone with one plain linear last layer.
    """

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of(cls, features: torch.Tensor) -> "FeatureScaling":
        return cls(features.mean(0), features.std(0).clamp_min(1e-6))

    def apply(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std

    def fold(self, head: nn.Linear) -> nn.Linear:
        folded = nn.Linear(head.in_features, head.out_features)
        with torch.no_grad():
            weight = head.weight.detach().cpu().double()
            folded.weight.copy_(weight / self.std.double())
            folded.bias.copy_(head.bias.detach().cpu().double() - weight @ (self.mean.double() / self.std.double()))
        return folded


def attach_head(model: nn.Module, head: nn.Linear) -> nn.Module:
    """The full classifier: ``model`` (the pretrained backbone, any head) with ``head`` as its last layer."""
    return set_head(model, head)
