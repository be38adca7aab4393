"""Synthesize (seed step 4): balance the training split with SMOTE (or random
over-sampling, or nothing); validation and test are never touched.

in: data/processed/split/train.npz   out: data/processed/train_balanced.npz, metrics/synthesize.json
params: seed, synthesize.*
"""
from __future__ import annotations

from lifecycle import paths
from lifecycle.errors import run_stage
from lifecycle.io import read_arrays, read_json, write_arrays_atomic, write_json_atomic
from lifecycle.params import GlobalParams, load_params
from lifecycle.synthesis import SynthesizeParams, balance, class_counts


def main() -> None:
    params = load_params("synthesize", SynthesizeParams)
    seed = load_params(None, GlobalParams).seed
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
