"""The batch augmentation against torchvision's per-image transforms: the same pixels for the
same parameters, the same distribution of parameters and of output statistics; each image
of a batch its own draw; reproducible from the generator; the preview is training's code."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from lifecycle.augmentation import Augmenting, BatchAugmentation, Draws, apply, preview
from lifecycle.core.params import load_params

SIZE = 32
STRONG = BatchAugmentation(hflip=0.5, rotation=30.0, crop_scale=0.5, brightness=0.4, contrast=0.4, saturation=0.4,
                           hue=0.1)


def torchvision_pipeline(aug: BatchAugmentation, size: int) -> v2.Compose:
    """What the project applied before, one image at a time (the reference)."""
    steps: list[torch.nn.Module] = []
    if aug.rotation > 0:
        steps.append(v2.RandomRotation(aug.rotation))
    if aug.crop_scale < 1.0:
        steps.append(v2.RandomResizedCrop(size, scale=(aug.crop_scale, 1.0), antialias=True))
    if aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=aug.hflip))
    if any((aug.brightness, aug.contrast, aug.saturation, aug.hue)):
        steps.append(v2.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue))
    return v2.Compose(steps)


def torchvision_with(draws: Draws, k: int, image: torch.Tensor) -> torch.Tensor:
    """torchvision's functional ops on one image with the k-th image's drawn parameters."""
    size = list(image.shape[-2:])
    image = F.rotate(image, float(draws.angle[k]), interpolation=v2.InterpolationMode.NEAREST, fill=0)
    top, left, height, width = draws.crop[k].tolist()
    image = F.resized_crop(image, top, left, height, width, size, antialias=True)
    if draws.flip[k]:
        image = F.horizontal_flip(image)
    brightness, contrast, saturation, hue = draws.factors[k].tolist()
    steps = [lambda x: F.adjust_brightness(x, brightness), lambda x: F.adjust_contrast(x, contrast),
             lambda x: F.adjust_saturation(x, saturation), lambda x: F.adjust_hue(x, hue)]
    for step in draws.order[k].tolist():
        if draws.enabled[step]:
            image = steps[step](image)
    return image


def scenes(count: int = 4, size: int = SIZE) -> torch.Tensor:
    """Structured uint8 images (N, 3, S, S): coloured halves, gradients, a disc, noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    images = np.zeros((4, size, size, 3))
    images[0, :, : size // 2] = (230, 120, 30)     # orange left half, dark blue right half
    images[0, :, size // 2 :] = (20, 40, 90)
    images[1] = np.stack([x * 255, y * 200 + 30, (1 - x) * 180 + 40], -1)
    disc = (x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.08
    images[2] = (60, 140, 70)
    images[2][disc] = (250, 240, 220)
    images[3] = rng.integers(0, 256, (size, size, 3))
    return torch.from_numpy(images[:count].round().astype(np.uint8)).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------- same parameters, same pixels


def test_geometry_matches_torchvisions_rotation_resized_crop_and_flip_pixel_for_pixel():
    images = scenes().repeat(8, 1, 1, 1)
    aug = BatchAugmentation(hflip=0.5, rotation=30.0, crop_scale=0.5, brightness=0, contrast=0, saturation=0, hue=0)
    draws = aug.draw(len(images), SIZE, SIZE, torch.Generator().manual_seed(1))
    assert draws.flip.any() and not draws.flip.all() and (draws.angle.abs() > 5).any()
    ours = apply(images, draws).int()
    theirs = torch.stack([torchvision_with(draws, k, image) for k, image in enumerate(images)]).int()
    difference = (ours - theirs).abs()
    assert difference.max() <= 1  # torchvision's uint8 resize rounds its fixed-point weights
    assert (difference == 0).float().mean() > 0.8


def test_colour_jitter_matches_torchvisions_in_each_images_random_order():
    images = scenes().repeat(8, 1, 1, 1)
    aug = BatchAugmentation(hflip=0, rotation=0, crop_scale=1.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    draws = aug.draw(len(images), SIZE, SIZE, torch.Generator().manual_seed(2))
    assert len({tuple(order) for order in draws.order.tolist()}) > 10  # many different orders
    ours = apply(images, draws).int()
    theirs = torch.stack([torchvision_with(draws, k, image) for k, image in enumerate(images)]).int()
    difference = (ours - theirs).abs()
    assert (difference == 0).float().mean() > 0.995  # float rounding at a truncation edge, rarely
    assert difference.max() <= 3


def test_the_whole_pipeline_matches_torchvisions_for_the_same_parameters():
    images = scenes().repeat(8, 1, 1, 1)
    draws = STRONG.draw(len(images), SIZE, SIZE, torch.Generator().manual_seed(3))
    ours = apply(images, draws).int()
    theirs = torch.stack([torchvision_with(draws, k, image) for k, image in enumerate(images)]).int()
    assert ((ours - theirs).abs() <= 1).float().mean() > 0.95


# ----------------------------------------------------------------------------- same distribution


def test_drawn_parameters_follow_torchvisions_distributions():
    n = 4000
    draws = STRONG.draw(n, SIZE, SIZE, torch.Generator().manual_seed(4))
    torch.manual_seed(4)
    crop = v2.RandomResizedCrop(SIZE, scale=(STRONG.crop_scale, 1.0))
    jitter = v2.ColorJitter(STRONG.brightness, STRONG.contrast, STRONG.saturation, STRONG.hue)
    rotation = v2.RandomRotation(STRONG.rotation)
    image = torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)
    boxes = torch.tensor([[p["top"], p["left"], p["height"], p["width"]]
                          for p in (crop.make_params([image]) for _ in range(n))], dtype=torch.float64)
    angles = torch.tensor([rotation.make_params([image])["angle"] for _ in range(n)], dtype=torch.float64)
    jitters = [jitter.make_params([image]) for _ in range(n)]
    factors = torch.tensor([[p["brightness_factor"], p["contrast_factor"], p["saturation_factor"], p["hue_factor"]]
                            for p in jitters], dtype=torch.float64)
    first_steps = torch.tensor([int(p["fn_idx"][0]) for p in jitters])

    assert abs(draws.flip.double().mean() - STRONG.hflip) < 0.03
    assert _ks(draws.angle, angles) < 0.05
    ours_box = draws.crop.double()
    for column in range(4):  # top, left, height, width
        assert _ks(ours_box[:, column], boxes[:, column]) < 0.05, column
    assert _ks(ours_box[:, 2] * ours_box[:, 3], boxes[:, 2] * boxes[:, 3]) < 0.05  # area
    for column in range(4):  # brightness, contrast, saturation, hue
        assert _ks(draws.factors[:, column], factors[:, column]) < 0.05, column
    for step in range(4):
        assert abs((draws.order[:, 0] == step).double().mean() - (first_steps == step).double().mean()) < 0.04
    assert (draws.order.sort(1).values == torch.arange(4)).all()  # each order is a permutation


def _ks(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    values = torch.cat([a, b]).double().sort().values
    cdf_a = torch.searchsorted(a.double().sort().values, values, right=True) / len(a)
    cdf_b = torch.searchsorted(b.double().sort().values, values, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


def _statistics(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: brightness (mean luma), contrast (luma std), HSV saturation, the hue of the
    orange half (circular mean), and which half is brighter (the flip)."""
    x = images.double() / 255.0
    luma = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    high, low = x.amax(1), x.amin(1)
    saturation = torch.where(high > 0, (high - low) / high.clamp(min=1e-9), 0.0)
    r, g, b = x.unbind(1)
    angle = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)  # hue as an angle
    weight = (high - low)
    hue = torch.atan2((weight * torch.sin(angle)).sum((1, 2)), (weight * torch.cos(angle)).sum((1, 2)))
    half = images.shape[-1] // 2
    left_brighter = (luma[:, :, :half].mean((1, 2)) > luma[:, :, half:].mean((1, 2))).double()
    return {"brightness": luma.mean((1, 2)), "contrast": luma.std((1, 2)), "saturation": saturation.mean((1, 2)),
            "hue": hue, "left_brighter": left_brighter}


@pytest.fixture(scope="module")
def three_runs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each scene augmented 600 times with the project's default params: by the batch
    pipeline, by torchvision's, and by torchvision's again with other seeds (the yardstick:
    two runs of the same pipeline differ this much by chance). Each (4, 600, 3, S, S)."""
    originals, draws_per_scene = scenes(), 600
    aug = BatchAugmentation.from_params(load_params().augment)
    batch = originals.repeat_interleave(draws_per_scene, 0)
    ours = torch.cat([aug(chunk, torch.Generator().manual_seed(10 + i)) for i, chunk in enumerate(batch.split(256))])
    reference = torchvision_pipeline(aug, SIZE)
    runs = [ours]
    for seed in (10, 11):
        torch.manual_seed(seed)
        runs.append(torch.stack([reference(image) for image in batch]))
    shape = (len(originals), draws_per_scene, 3, SIZE, SIZE)
    return tuple(run.view(shape) for run in runs)


@pytest.mark.slow
def test_per_pixel_mean_and_spread_maps_agree_with_torchvisions(three_runs):
    """Where each pixel lands on average, and how much it varies (flip, rotation, crop, jitter):
    no further from torchvision's than a second run of torchvision is."""
    ours, theirs, again = three_runs
    for scene in range(ours.shape[0]):
        for statistic in (lambda run: run.double().mean(0), lambda run: run.double().std(0)):
            ours_map, theirs_map, again_map = (statistic(run[scene]) for run in (ours, theirs, again))
            chance = (again_map - theirs_map).abs().mean()
            assert (ours_map - theirs_map).abs().mean() < 1.5 * chance + 0.5, scene  # levels of 255


@pytest.mark.slow
def test_brightness_contrast_saturation_hue_and_flip_distributions_agree_with_torchvisions(three_runs):
    ours, theirs, _ = three_runs
    critical = 1.95 * math.sqrt(2 / ours.shape[1])  # two-sample KS at the 0.1% level
    for scene in range(ours.shape[0]):
        mine, reference = _statistics(ours[scene]), _statistics(theirs[scene])
        for name in ("brightness", "contrast", "saturation", "hue"):
            assert _ks(mine[name], reference[name]) < critical, (scene, name)
        assert abs(mine["left_brighter"].mean() - reference["left_brighter"].mean()) < 0.08, scene
    assert 0.42 < _statistics(ours[0])["left_brighter"].mean() < 0.58  # the flip, on the two-coloured scene


# ----------------------------------------------------------------------------- per image, reproducible


def test_every_image_of_a_batch_gets_its_own_draw_and_the_generator_decides_all():
    image = scenes(1)
    batch = image.repeat(16, 1, 1, 1)
    aug = BatchAugmentation.from_params(load_params().augment)
    first = aug(batch, torch.Generator().manual_seed(0))
    assert first.dtype == torch.uint8 and first.shape == batch.shape
    assert len({bytes(one.flatten().numpy()) for one in first}) == 16  # sixteen different copies
    assert torch.equal(first, aug(batch, torch.Generator().manual_seed(0)))
    assert not torch.equal(first, aug(batch, torch.Generator().manual_seed(1)))
    state = torch.get_rng_state()
    aug(batch, torch.Generator().manual_seed(2))
    assert torch.equal(state, torch.get_rng_state())  # torch's global generator is left alone


def test_switched_off_steps_leave_images_exactly_as_they_were():
    images = scenes()
    off = BatchAugmentation(hflip=0, rotation=0, crop_scale=1.0, brightness=0, contrast=0, saturation=0, hue=0)
    assert torch.equal(off(images, torch.Generator().manual_seed(0)), images)
    only_flip = BatchAugmentation(hflip=1.0, rotation=0, crop_scale=1.0, brightness=0, contrast=0, saturation=0, hue=0)
    assert torch.equal(only_flip(images, torch.Generator().manual_seed(0)), images.flip(-1))


def test_the_training_transform_keeps_labels_and_the_preview_runs_the_same_code():
    images = scenes()
    labels = torch.tensor([0, 1, 1, 0])
    augmenting = Augmenting(load_params().augment)
    augmented, same_labels = augmenting(images, labels, torch.Generator().manual_seed(5))
    assert torch.equal(same_labels, labels)
    assert torch.equal(augmented, augmenting.augmentation(images, torch.Generator().manual_seed(5)))
    # the preview: each original, then its copies, all one batch through BatchAugmentation
    tiles = preview(images.permute(0, 2, 3, 1).numpy(), augmenting.augmentation, 3, seed=9)
    assert tiles.shape == (16, SIZE, SIZE, 3)
    copies = images.repeat_interleave(3, 0)
    expected = augmenting.augmentation(copies, torch.Generator().manual_seed(9)).permute(0, 2, 3, 1).numpy()
    for i in range(4):
        assert np.array_equal(tiles[4 * i], images[i].permute(1, 2, 0).numpy())
        assert np.array_equal(tiles[4 * i + 1 : 4 * i + 4], expected[3 * i : 3 * i + 3])


def test_a_batch_that_is_not_uint8_images_is_refused():
    with pytest.raises(ValueError, match="uint8 batch"):
        BatchAugmentation()(torch.zeros(2, 3, 8, 8), torch.Generator())
