"""Split: stratified train / validation / test from the seed; the same picture never lands
in two splits.

in: data/processed/features.npz   out: data/processed/split/{train,val,test}.npz,
metrics/split.json (images per split), plots/split/<split>.csv (images per class)
params: seed, split.*
"""
from __future__ import annotations

from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import (
    atomic_dir,
    read_labelled,
    write_arrays_atomic,
    write_counts_atomic,
    write_json_atomic,
)
from lifecycle.core.params import load_params
from lifecycle.labels import class_counts
from lifecycle.splitting import SPLIT_NAMES, content_groups, split_indices


def main() -> None:
    pipeline = load_params()
    params, seed = pipeline.split, pipeline.seed
    features, classes = read_labelled(paths.FEATURES)
    indices = split_indices(features["labels"], content_groups(features["images"]), params, seed)
    with atomic_dir(paths.SPLITS) as staging:
        for name in SPLIT_NAMES:
            chosen = indices[name]
            write_arrays_atomic(staging / f"{name}.npz", **{k: v[chosen] for k, v in features.items()})
    for name, idx in indices.items():
        write_counts_atomic(class_counts(features["labels"][idx], classes), paths.stage_plots("split") / f"{name}.csv")
    write_json_atomic({name: {"images": len(idx)} for name, idx in indices.items()}, paths.METRICS / "split.json")
    print("split: " + ", ".join(f"{name} {len(idx)}" for name, idx in indices.items()))


if __name__ == "__main__":
    run_stage(main)
