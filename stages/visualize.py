"""Visualize (seed step 7): a grid of sample training images with their labels, synthetic
(SMOTE) samples marked, so a person can see what the model learns from.

in: data/processed/train_balanced.npz, data/processed/classes.json   out: plots/samples.png
params: seed, visualize.*
"""
from __future__ import annotations

from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import read_labelled
from lifecycle.core.params import load_params
from lifecycle.exploration import pick_samples
from lifecycle.figures import image_grid, save_figure

SAMPLES = paths.PLOTS / "samples.png"


def main() -> None:
    pipeline = load_params()
    params, seed = pipeline.visualize, pipeline.seed
    train, classes = read_labelled(paths.TRAIN_BALANCED)
    chosen = pick_samples(train["labels"], params.rows * params.columns, seed)
    titles = [
        f"{classes[train['labels'][i]]} ({train['labels'][i]})" + (" SMOTE" if train["synthetic"][i] else "")
        for i in chosen
    ]
    save_figure(image_grid(train["images"][chosen], titles, params.columns, title="Training samples: label (code)"), SAMPLES)
    print(f"visualize: {len(chosen)} samples -> {paths.relative(SAMPLES)}")


if __name__ == "__main__":
    run_stage(main)
