"""Visualize (seed step 7): a grid of sample training images with their labels, synthetic
(SMOTE) samples marked, so a person can see what the model learns from.

in: data/processed/train_balanced.npz, data/processed/classes.json   out: plots/samples.png
params: seed, visualize.*
"""
from __future__ import annotations

import dataclasses

import numpy as np

from lifecycle import paths
from lifecycle.errors import run_stage
from lifecycle.figures import image_grid, save_figure
from lifecycle.io import read_arrays, read_json
from lifecycle.params import GlobalParams, load_params, require

SAMPLES = paths.PLOTS / "samples.png"


@dataclasses.dataclass(frozen=True)
class VisualizeParams:
    rows: int = 4     # grid rows
    columns: int = 8  # grid columns

    def __post_init__(self) -> None:
        require(self.rows >= 1, "rows", "must be at least 1")
        require(self.columns >= 1, "columns", "must be at least 1")


def pick_samples(labels: np.ndarray, synthetic: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices of ``count`` samples, balanced over classes, real and synthetic mixed as in the data."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    chosen = [i for group in zip(*per_class) for i in group][:count]
    return np.array(chosen, dtype=np.int64)


def main() -> None:
    params = load_params("visualize", VisualizeParams)
    seed = load_params(None, GlobalParams).seed
    train = read_arrays(paths.TRAIN_BALANCED)
    classes = read_json(paths.CLASSES)["classes"]
    chosen = pick_samples(train["labels"], train["synthetic"], params.rows * params.columns, seed)
    titles = [
        f"{classes[train['labels'][i]]} ({train['labels'][i]})" + (" SMOTE" if train["synthetic"][i] else "")
        for i in chosen
    ]
    save_figure(image_grid(train["images"][chosen], titles, params.columns, title="Training samples: label (code)"), SAMPLES)
    print(f"visualize: {len(chosen)} samples -> {paths.relative(SAMPLES)}")


if __name__ == "__main__":
    run_stage(main)
