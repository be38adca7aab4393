"""Synthesize (seed step 4): balance the training split with SMOTE (or random
over-sampling, or nothing); validation and test are never touched.

in: data/processed/split/train.npz   out: data/processed/train_balanced.npz,
metrics/synthesize.json (synthetic images), plots/synthesize/{before,after}.csv (images per class)
params: seed, synthesize.*
"""
from __future__ import annotations

from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import (
    read_labelled,
    write_arrays_atomic,
    write_counts_atomic,
    write_json_atomic,
)
from lifecycle.core.params import load_params
from lifecycle.labels import class_counts
from lifecycle.synthesis import balance


def main() -> None:
    pipeline = load_params()
    params, seed = pipeline.synthesize, pipeline.seed
    train, classes = read_labelled(paths.TRAIN)
    images, labels, synthetic = balance(train["images"], train["labels"], params, seed)
    write_arrays_atomic(paths.TRAIN_BALANCED, images=images, labels=labels, synthetic=synthetic)
    before, after = class_counts(train["labels"], classes), class_counts(labels, classes)
    write_counts_atomic(before, paths.stage_plots("synthesize") / "before.csv")
    write_counts_atomic(after, paths.stage_plots("synthesize") / "after.csv")
    write_json_atomic({"synthetic_images": int(synthetic.sum())}, paths.METRICS / "synthesize.json")
    print(f"synthesize ({params.method}): {before} -> {after}")


if __name__ == "__main__":
    run_stage(main)
