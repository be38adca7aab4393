"""Synthesize (seed step 4): balance the training split with SMOTE (or random
over-sampling, or nothing); validation and test are never touched.

in: data/processed/split/train.npz   out: data/processed/train_balanced.npz, metrics/synthesize.json
params: seed, synthesize.*
"""
from __future__ import annotations

from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import (
    read_arrays,
    read_json,
    write_arrays_atomic,
    write_json_atomic,
)
from lifecycle.core.params import load_params
from lifecycle.labels import class_counts
from lifecycle.synthesis import balance


def main() -> None:
    pipeline = load_params()
    params, seed = pipeline.synthesize, pipeline.seed
    train = read_arrays(paths.TRAIN)
    classes = read_json(paths.CLASSES)["classes"]
    images, labels, synthetic = balance(train["images"], train["labels"], params, seed)
    write_arrays_atomic(paths.TRAIN_BALANCED, images=images, labels=labels, synthetic=synthetic)
    report = {
        "method": params.method,
        "class_counts_before": class_counts(train["labels"], classes),
        "class_counts_after": class_counts(labels, classes),
        "synthetic_images": int(synthetic.sum()),
    }
    write_json_atomic(report, paths.METRICS / "synthesize.json")
    print(f"synthesize ({params.method}): {report['class_counts_before']} -> {report['class_counts_after']}")


if __name__ == "__main__":
    run_stage(main)
