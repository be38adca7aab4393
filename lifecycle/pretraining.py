"""Pretraining (the ``pretrain`` stage): a backbone for finetune and transfer, learned or fetched offline.

There is no internet at run time, so ImageNet weights cannot be the default. ``pretrain``
learns a backbone without labels instead: each training image is turned by 0, 90, 180 or
270 degrees and the network learns to tell which (a rotation pretext task: to know which
way is up it must find ears, eyes and snouts). ``weights: imagenet`` takes torchvision's
ImageNet weights (downloaded once into torch's hub cache; the file becomes the DVC output
so ``dvc.lock`` pins it); ``weights: none`` keeps a seeded random initialisation, the
baseline that shows what pretraining buys.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.error import URLError

import torch
import torchvision

from lifecycle.augmentation import Augmenting
from lifecycle.core.errors import UserError
from lifecycle.core.io import file_sha256
from lifecycle.models import ModelSpec, build_model, check_image_size, save_model, torchvision_model

ROTATIONS = ("rot0", "rot90", "rot180", "rot270")  # the pretext task's classes


# ----------------------------------------------------------------------------- pretext


class RotationPretext:
    """The batch transform of the pretext task: augment (optional), then turn each image by its
    own k * 90 degrees, drawn from the batch's generator; the label becomes k."""

    def __init__(self, augmenting: Augmenting | None) -> None:
        self.augmenting = augmenting

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augmenting is not None:
            images, labels = self.augmenting(images, labels, generator)
        turns = torch.randint(len(ROTATIONS), (len(images),), generator=generator)
        return turned(images, turns), turns.to(images.device)


def turned(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Each image (N, 3, H, W) turned counter-clockwise by ``turns`` (CPU, N) quarter turns,
    one ``rot90`` per group of images with the same turn."""
    result = images.clone()
    for k in range(1, len(ROTATIONS)):
        chosen = torch.nonzero(turns == k).flatten()
        if len(chosen):
            index = chosen.to(images.device)
            result[index] = torch.rot90(images.index_select(0, index), k, dims=(2, 3))
    return result


def rotated_for_validation(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation for the pretext task: image i turned by (i mod 4) * 90 degrees, fixed."""
    turns = torch.arange(len(images)) % len(ROTATIONS)
    return turned(images, turns), turns.to(torch.int64)


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
    try:
        model = torchvision_model(architecture, weights)
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
            "sha256": file_sha256(checkpoint),
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


