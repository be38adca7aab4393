"""Augment (seed step 5): the torchvision transforms-v2 pipeline, built from params.

The seed's random horizontal flip and small rotation, plus a random resized crop and
colour jitter: the variations a photo of a pet really has. It works on uint8 image
tensors (N, 3, H, W) or (3, H, W), before normalisation, and keeps their size, so the
``augment`` stage's preview and the training loop run exactly the same code on the fly.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from lifecycle.core.schema import AugmentParams


def build_augmentation(params: AugmentParams, image_size: int) -> v2.Compose:
    """The training-time augmentation for square uint8 images of side ``image_size``."""
    steps: list[torch.nn.Module] = []
    if params.rotation > 0:  # first, so that the crop trims most of the corners it uncovers
        steps.append(v2.RandomRotation(params.rotation))
    if params.crop_scale < 1.0:
        steps.append(v2.RandomResizedCrop(image_size, scale=(params.crop_scale, 1.0), antialias=True))
    if params.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=params.hflip))
    if any((params.brightness, params.contrast, params.saturation, params.hue)):
        steps.append(v2.ColorJitter(params.brightness, params.contrast, params.saturation, params.hue))
    return v2.Compose(steps)


def augment_batch(transform: v2.Compose, images: torch.Tensor) -> torch.Tensor:
    """Apply ``transform`` to each uint8 image (N, 3, H, W) independently."""
    return torch.stack([transform(image) for image in images])


class Augmenting:
    """The per-sample transform of supervised training: the ``augment`` pipeline on uint8 images."""

    def __init__(self, params: AugmentParams, image_size: int) -> None:
        self.transform = build_augmentation(params, image_size)

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(image), label


def preview(images: np.ndarray, params: AugmentParams, seed: int) -> np.ndarray:
    """Each uint8 image (N, H, W, 3) followed by ``preview_variants`` augmented copies, as one batch."""
    torch.manual_seed(seed)
    transform = build_augmentation(params, images.shape[1])
    tiles = []
    for image in images:
        tensor = torch.from_numpy(image).permute(2, 0, 1)
        tiles.append(image)
        tiles += [transform(tensor).permute(1, 2, 0).numpy() for _ in range(params.preview_variants)]
    return np.stack(tiles)
