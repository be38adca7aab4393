"""Augment (seed step 5): preview the augmentation pipeline that training applies on the fly,
built from params, on a few training images: the copies are one batch through the same
code training runs (lifecycle.augmentation.BatchAugmentation), so the preview shows what
training sees.

in: data/processed/train_balanced.npz   out: plots/augment_preview.png   params: seed, augment.*
"""
from __future__ import annotations

import numpy as np

from lifecycle.augmentation import BatchAugmentation, preview
from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import read_labelled
from lifecycle.core.params import load_params
from lifecycle.figures import image_grid, save_figure

PREVIEW = paths.PLOTS / "augment_preview.png"


def main() -> None:
    pipeline = load_params()
    params, seed = pipeline.augment, pipeline.seed
    train, classes = read_labelled(paths.TRAIN_BALANCED)
    originals = np.flatnonzero(~train["synthetic"])
    chosen = np.random.default_rng(seed).choice(originals, size=min(params.preview_images, len(originals)), replace=False)
    tiles = preview(train["images"][chosen], BatchAugmentation.from_params(params), params.preview_variants, seed)
    columns = params.preview_variants + 1
    titles = [
        f"{classes[train['labels'][i]]}" if k == 0 else f"augmented {k}"
        for i in chosen for k in range(columns)
    ]
    save_figure(image_grid(tiles, titles, columns, title="Training augmentation (first column: original)"), PREVIEW)
    print(f"augment: preview of {len(chosen)} images x {params.preview_variants} variants -> {paths.relative(PREVIEW)}")


if __name__ == "__main__":
    run_stage(main)
