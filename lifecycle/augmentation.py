"""Augment (seed step 5): the ``augment.*`` pipeline applied to whole uint8 batches on the training device.

In: a uint8 batch (N, 3, H, W) on any device and a CPU ``torch.Generator``. Out: a uint8 batch
of the same shape on the same device, each image with its own random draw of the seed's
random horizontal flip and small rotation, a random resized crop and colour jitter
(brightness, contrast, saturation, hue, in a random order per image): the variations a
photo of a pet really has.

Why batches: applied one image at a time in a loader worker on the CPU, this pipeline held
a GPU to a seventeenth of its speed and cost 30% on two CPU cores. Here every image's
parameters are drawn on the CPU from the generator (so CPU and CUDA draw the same numbers,
and nothing depends on loader workers), moved to the device once, and the images are
transformed together:

- geometry in two ``grid_sample`` calls over the batch: the rotation about the centre
  (nearest, uncovered corners 0), then the resized crop (bilinear, sampling points clamped
  to the crop) with the flip folded in: the arithmetic of torchvision's v2
  ``RandomRotation``, ``RandomResizedCrop(antialias=True)`` and ``RandomHorizontalFlip``
  one image at a time, within one intensity level (their parameter distributions are
  reproduced as well);
- colour jitter with torchvision's arithmetic, including its rounding to whole intensity
  levels after each step; the random order of the four steps is applied by sorting the
  batch by the step each image takes next, so every step runs on contiguous slices.

Only gathers and element-wise ops, so the CUDA path is deterministic under
``torch.use_deterministic_algorithms(True)``. The ``augment`` stage's preview
(:func:`preview`) runs this same code, so it shows what training sees.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# RandomResizedCrop's aspect ratios and attempts (torchvision's defaults)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10
# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
LUMA = (0.2989, 0.587, 0.114)
JITTER_STEPS = ("brightness", "contrast", "saturation", "hue")


@dataclasses.dataclass(frozen=True)
class BatchAugmentation:
    """The ``augment.*`` keys training reads (``AugmentParams.training_keys()``); 0 (1.0 for
    ``crop_scale``) disables a step. Call it on a uint8 batch with a CPU generator."""

    hflip: float = 0.5        # probability of a horizontal flip
    rotation: float = 10.0    # maximum rotation in degrees, either way
    crop_scale: float = 0.8   # minimum area fraction of the random resized crop; 1.0 disables it
    brightness: float = 0.2   # colour jitter strengths: factors drawn from [1 - x, 1 + x]
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02         # hue shift drawn from [-x, x] (fraction of the colour wheel)

    @classmethod
    def from_params(cls, params: Any) -> "BatchAugmentation":
        """From ``AugmentParams`` (or any object or mapping with these keys; extra keys ignored)."""
        get = params.get if isinstance(params, dict) else lambda key: getattr(params, key)
        return cls(**{field.name: float(get(field.name)) for field in dataclasses.fields(cls)})

    def draw(self, count: int, height: int, width: int, generator: torch.Generator) -> "Draws":
        """Every image's parameters, drawn on the CPU from ``generator`` in a fixed order."""
        return Draws.sample(self, count, height, width, generator)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> uint8 (N, 3, H, W) on the same device, one draw per image."""
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"expected a uint8 batch (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        draws = self.draw(len(images), images.shape[2], images.shape[3], generator)
        with _one_cpu_thread(images.device):
            return apply(images, draws)


class Augmenting:
    """The batch transform of supervised training (:func:`lifecycle.training.loop.fit`):
    ``augment.*`` on the images, the labels unchanged."""

    def __init__(self, params: Any) -> None:
        self.augmentation = BatchAugmentation.from_params(params)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augmentation(images, generator), labels


@dataclasses.dataclass(frozen=True)
class Draws:
    """One batch's per-image parameters (CPU tensors), as torchvision's transforms draw them."""

    flip: torch.Tensor        # (N,) bool
    angle: torch.Tensor       # (N,) degrees, counter-clockwise
    crop: torch.Tensor        # (N, 4) int64: top, left, height, width
    factors: torch.Tensor     # (N, 4) float64: brightness, contrast, saturation factors, hue shift
    order: torch.Tensor       # (N, 4) int64: the jitter steps (indices into JITTER_STEPS) in the order applied
    enabled: tuple[bool, bool, bool, bool]  # which jitter steps the params switch on

    @classmethod
    def sample(cls, aug: BatchAugmentation, n: int, height: int, width: int, generator: torch.Generator) -> "Draws":
        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, dtype=torch.float64)

        flip = uniform(n) < aug.hflip
        angle = (uniform(n) * 2.0 - 1.0) * aug.rotation
        crop = _crop_boxes(aug.crop_scale, n, height, width, uniform)
        strengths = torch.tensor([aug.brightness, aug.contrast, aug.saturation], dtype=torch.float64)
        factors = torch.cat([1.0 + (uniform(n, 3) * 2.0 - 1.0) * strengths, (uniform(n, 1) * 2.0 - 1.0) * aug.hue], 1)
        order = torch.argsort(uniform(n, 4), dim=1)  # a uniformly random permutation per image, as randperm(4)
        enabled = (aug.brightness > 0, aug.contrast > 0, aug.saturation > 0, aug.hue > 0)
        return cls(flip, angle, crop, factors, order, enabled)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """On the CPU, run the augmentation's many small element-wise ops on one thread: waking a
    second (passively waiting) OpenMP thread for each costs more than it saves on two busy
    cores (9 ms instead of 21 ms per batch of 32 at 64 px, load average 4). Same results."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _crop_boxes(scale: float, n: int, height: int, width: int, uniform) -> torch.Tensor:
    """RandomResizedCrop's boxes: area fraction in [scale, 1], log aspect ratio uniform, the
    first of ten attempts that fits, else the whole (square-ratio) image; position uniform."""
    if scale >= 1.0:  # the step is off: the whole image
        return torch.tensor([[0, 0, height, width]], dtype=torch.int64).repeat(n, 1)
    area = height * width * (scale + (1.0 - scale) * uniform(n, CROP_ATTEMPTS))
    low, high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = torch.exp(low + (high - low) * uniform(n, CROP_ATTEMPTS))
    w = torch.round(torch.sqrt(area * ratio)).to(torch.int64)   # round half to even, as Python's round
    h = torch.round(torch.sqrt(area / ratio)).to(torch.int64)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(fits.to(torch.int8), dim=1, keepdim=True)   # first attempt that fits
    any_fit = fits.any(1)
    h = torch.where(any_fit, h.gather(1, first)[:, 0], _fallback_side(height, width)[0])
    w = torch.where(any_fit, w.gather(1, first)[:, 0], _fallback_side(height, width)[1])
    position = uniform(n, 2)
    top = torch.where(any_fit, torch.floor(position[:, 0] * (height - h + 1)).to(torch.int64), (height - h) // 2)
    left = torch.where(any_fit, torch.floor(position[:, 1] * (width - w + 1)).to(torch.int64), (width - w) // 2)
    return torch.stack([top, left, h, w], 1)


def _fallback_side(height: int, width: int) -> tuple[int, int]:
    """RandomResizedCrop's central fallback box (height, width) when no attempt fits."""
    in_ratio = width / height
    if in_ratio < CROP_RATIO[0]:
        return int(round(width / CROP_RATIO[0])), width
    if in_ratio > CROP_RATIO[1]:
        return height, int(round(height * CROP_RATIO[1]))
    return height, width


# ----------------------------------------------------------------------------- applying draws


def apply(images: torch.Tensor, draws: Draws) -> torch.Tensor:
    """``images`` (uint8, N x 3 x H x W, any device) transformed by ``draws``: geometry, then jitter."""
    if len(images) == 0:
        return images.clone()
    warped = _geometry(images, draws)
    return _jitter(warped, draws).to(torch.uint8)


def _geometry(images: torch.Tensor, draws: Draws) -> torch.Tensor:
    """torchvision's chain on the whole batch in two ``grid_sample`` calls: the rotation about
    the centre (nearest, uncovered corners 0), then the resized crop (bilinear, sampling
    points clamped to the crop as ``interpolate`` clamps them) with the flip folded into
    its columns. Returns float images holding whole levels 0..255."""
    n, _, height, width = images.shape
    device = images.device
    batch = images.to(torch.float32)
    if bool((draws.angle != 0).any()):
        radians = torch.deg2rad(-draws.angle)
        cos, sin = torch.cos(radians), torch.sin(radians)
        zero = torch.zeros_like(cos)
        # torchvision's inverse rotation in pixels about the centre, in grid_sample's [-1, 1] units
        theta = torch.stack([torch.stack([cos, sin * height / width, zero], 1),
                             torch.stack([-sin * width / height, cos, zero], 1)], 1)
        grid = F.affine_grid(theta.to(device=device, dtype=torch.float32), [n, 3, height, width], align_corners=False)
        batch = F.grid_sample(batch, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    crop = draws.crop
    whole = (crop[:, 2] == height) & (crop[:, 3] == width)
    if bool((~whole | draws.flip).any()):
        top, left, crop_h, crop_w = crop.to(torch.float64).unbind(1)
        columns = torch.arange(width, dtype=torch.float64).expand(n, width)
        columns = torch.where(draws.flip[:, None], width - 1 - columns, columns)
        rows = torch.arange(height, dtype=torch.float64).expand(n, height)
        x = _crop_coordinates(columns, left, crop_w, width).to(device=device, dtype=torch.float32)
        y = _crop_coordinates(rows, top, crop_h, height).to(device=device, dtype=torch.float32)
        grid = torch.stack([x[:, None, :].expand(n, height, width), y[:, :, None].expand(n, height, width)], 3)
        batch = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
        batch = batch.round_().clamp_(0, 255)
    return batch


def _crop_coordinates(out: torch.Tensor, start: torch.Tensor, crop_side: torch.Tensor, side: int) -> torch.Tensor:
    """Where output coordinates ``out`` (N, S) of a crop (``start``, ``crop_side``) resized to
    ``side`` sample the image, in grid_sample's [-1, 1] units: half-pixel centres, clamped to
    the crop's first and last pixel as ``interpolate`` clamps them."""
    source = ((out + 0.5) * (crop_side[:, None] / side) - 0.5).clamp(min=0)
    source = torch.minimum(source, crop_side[:, None] - 1) + start[:, None]
    return (2.0 * source + 1.0) / side - 1.0


def _jitter(images: torch.Tensor, draws: Draws) -> torch.Tensor:
    """Colour jitter on float images holding whole levels 0..255, each image's four steps in
    its own order. For each of the four positions the batch is sorted by the step its images
    take there, and each step runs in place on one contiguous slice; one last gather restores
    the order. The sorting is planned on the CPU and moved to the device in one copy."""
    if not any(draws.enabled):
        return images
    n, steps = len(images), len(JITTER_STEPS)
    position = torch.arange(n)        # position[k]: which image sits at row k
    sorts, positions, counts = [], [], []
    for slot in range(steps):
        step_of_row = draws.order[position, slot]
        sort = torch.argsort(step_of_row, stable=True)
        position = position[sort]
        sorts.append(sort)
        positions.append(position)
        counts.append(torch.bincount(step_of_row, minlength=steps).tolist())
    plan = torch.stack([*sorts, *positions, torch.argsort(position)]).to(images.device)
    factors = draws.factors.to(device=images.device, dtype=torch.float32)
    current = images
    for slot in range(steps):
        current = current.index_select(0, plan[slot])   # a new tensor: the steps may work in place
        slot_factors = factors.index_select(0, plan[steps + slot])
        start = 0
        for step, count in enumerate(counts[slot]):
            if count and draws.enabled[step]:
                piece = current[start:start + count]
                changed = _JITTER[step](piece, slot_factors[start:start + count, step].view(-1, 1, 1, 1))
                if changed.data_ptr() != piece.data_ptr():  # hue returns a new tensor; the others work in place
                    piece.copy_(changed)
            start += count
    return current.index_select(0, plan[-1])


def _luma(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) grey levels, truncated to whole levels as torchvision does for uint8."""
    r, g, b = images.unbind(1)
    return r.mul(LUMA[0]).add_(g, alpha=LUMA[1]).add_(b, alpha=LUMA[2]).floor_().unsqueeze(1)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's blend for uint8 images, in place: ``factor`` of the image plus
    ``1 - factor`` of ``other``; clamp, truncate to a whole level."""
    return images.mul_(factor).add_(other.mul(1.0 - factor)).clamp_(0, 255).floor_()


def _brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return images.mul_(factor).clamp_(0, 255).floor_()


def _contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _luma(images).mean(dim=(1, 2, 3), keepdim=True), factor)


def _saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _luma(images), factor)


def _hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Turn the hue by ``shift`` (a fraction of the wheel) keeping HSV saturation and value, as
    torchvision's adjust_hue does (same HSV model, ties to red then green, same truncation
    back to whole levels), in fewer operations."""
    r, g, b = images.unbind(1)
    value, low = images.amax(1, keepdim=True), images.amin(1, keepdim=True)
    spread = value - low
    brightest, range_ = value[:, 0], spread[:, 0]
    red = (brightest == r).to(images.dtype)
    green = (brightest == g).to(images.dtype).mul_(1.0 - red)
    blue = 1.0 - red - green
    # hue in sixths of the wheel: 0 red, 2 green, 4 blue (grey pixels: spread 0, hue 0)
    hue = (g - b).mul_(red).add_((b - r).add_(range_, alpha=2.0).mul_(green))
    hue = hue.add_((r - g).add_(range_, alpha=4.0).mul_(blue)).div_(range_.clamp(min=1.0))
    hue = hue.add_(6.0 * shift[:, 0]).unsqueeze(1)
    # back to RGB, all channels at once: value - spread * clamp(2 - |k - 2|, 0, 1), k = (hue + n) mod 6
    k = hue + torch.tensor([5.0, 3.0, 1.0], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    k = k.sub_(torch.floor(k.mul(1.0 / 6.0)), alpha=6.0).sub_(2.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)
    return torch.addcmul(value, spread, k, value=-1.0).mul_(255.999 / 255.0).floor_()


_JITTER = (_brightness, _contrast, _saturation, _hue)


# ----------------------------------------------------------------------------- the preview


def preview(images: np.ndarray, augmentation: BatchAugmentation, variants: int, seed: int) -> np.ndarray:
    """Each uint8 image (N, H, W, 3) followed by ``variants`` augmented copies, as one batch
    (N * (variants + 1), H, W, 3): the copies go through :meth:`BatchAugmentation.__call__`
    together, as a training batch does."""
    batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    copies = batch.repeat_interleave(variants, dim=0)
    augmented = augmentation(copies.contiguous(), torch.Generator().manual_seed(seed))
    augmented = augmented.view(len(images), variants, *batch.shape[1:])
    tiles = torch.cat([batch.unsqueeze(1), augmented], 1).flatten(0, 1)
    return tiles.permute(0, 2, 3, 1).contiguous().numpy()
