"""Augment (seed step 5): build the torchvision augmentation pipeline from params and
preview it on training images; training applies the very same pipeline on the fly.

in: data/processed/train_balanced.npz   out: plots/augment_preview.png   params: seed, augment.*
"""
from __future__ import annotations

import numpy as np
import torch

from lifecycle import paths
from lifecycle.augmentation import AugmentParams, build_augmentation
from lifecycle.errors import run_stage
from lifecycle.figures import image_grid, save_figure
from lifecycle.io import read_arrays, read_json
from lifecycle.params import GlobalParams, load_params

PREVIEW = paths.PLOTS / "augment_preview.png"


def preview(images: np.ndarray, params: AugmentParams, seed: int) -> np.ndarray:
    """Each image followed by ``preview_variants`` augmented copies, as one uint8 batch."""
    torch.manual_seed(seed)
    transform = build_augmentation(params, images.shape[1])
    tiles = []
    for image in images:
        tensor = torch.from_numpy(image).permute(2, 0, 1)
        tiles.append(image)
        tiles += [transform(tensor).permute(1, 2, 0).numpy() for _ in range(params.preview_variants)]
    return np.stack(tiles)


def main() -> None:
    params = load_params("augment", AugmentParams)
    seed = load_params(None, GlobalParams).seed
    train = read_arrays(paths.TRAIN_BALANCED)
    classes = read_json(paths.CLASSES)["classes"]
    originals = np.flatnonzero(~train["synthetic"])
    chosen = np.random.default_rng(seed).choice(originals, size=min(params.preview_images, len(originals)), replace=False)
    tiles = preview(train["images"][chosen], params, seed)
    columns = params.preview_variants + 1
    titles = [
        f"{classes[train['labels'][i]]}" if k == 0 else f"augmented {k}"
        for i in chosen for k in range(columns)
    ]
    save_figure(image_grid(tiles, titles, columns, title="Training augmentation (first column: original)"), PREVIEW)
    print(f"augment: preview of {len(chosen)} images x {params.preview_variants} variants -> {paths.relative(PREVIEW)}")


if __name__ == "__main__":
    run_stage(main)
