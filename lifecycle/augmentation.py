"""Augment (seed step 5): the torchvision transforms-v2 pipeline, built from params.

The seed's random horizontal flip and small rotation, plus a random resized crop and
colour jitter: the variations a photo of a pet really has. It works on uint8 image
tensors (N, 3, H, W) or (3, H, W), before normalisation, and keeps their size, so the
``augment`` stage's preview and the training loop run exactly the same code on the fly.
"""
from __future__ import annotations

import dataclasses

import torch
from torchvision.transforms import v2

from lifecycle.params import require


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    hflip: float = 0.5          # probability of a horizontal flip (the seed's RandomHorizontalFlip)
    rotation: float = 10.0      # maximum rotation in degrees, either way (the seed's RandomRotation(10))
    crop_scale: float = 0.8     # RandomResizedCrop keeps at least this fraction of the area; 1 disables
    brightness: float = 0.2     # ColorJitter strengths; 0 disables each
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    preview_images: int = 6     # rows in plots/augment_preview.png
    preview_variants: int = 7   # augmented copies shown per row

    def __post_init__(self) -> None:
        require(0.0 <= self.hflip <= 1.0, "hflip", "must be a probability between 0 and 1")
        require(0.0 <= self.rotation <= 180.0, "rotation", "must be between 0 and 180 degrees")
        require(0.05 <= self.crop_scale <= 1.0, "crop_scale", "must be between 0.05 and 1")
        for name in ("brightness", "contrast", "saturation"):
            require(0.0 <= getattr(self, name) <= 1.0, name, "must be between 0 and 1")
        require(0.0 <= self.hue <= 0.5, "hue", "must be between 0 and 0.5")
        require(self.preview_images >= 1, "preview_images", "must be at least 1")
        require(self.preview_variants >= 1, "preview_variants", "must be at least 1")


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
