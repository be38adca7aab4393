"""Split: stratified train / validation / test from the seed; the same picture never lands
in two splits.

in: data/processed/features.npz   out: data/processed/split/{train,val,test}.npz, metrics/split.json
params: seed, split.*
"""
from __future__ import annotations

from lifecycle import paths
from lifecycle.errors import run_stage
from lifecycle.io import atomic_dir, read_arrays, read_json, write_arrays_atomic, write_json_atomic
from lifecycle.params import GlobalParams, load_params
from lifecycle.splitting import SPLIT_NAMES, SplitParams, content_groups, split_indices
from lifecycle.synthesis import class_counts


def main() -> None:
    params = load_params("split", SplitParams)
    seed = load_params(None, GlobalParams).seed
    features = read_arrays(paths.FEATURES)
    classes = read_json(paths.CLASSES)["classes"]
    indices = split_indices(features["labels"], content_groups(features["images"]), params, seed)
    with atomic_dir(paths.SPLITS) as staging:
        for name in SPLIT_NAMES:
            chosen = indices[name]
            write_arrays_atomic(staging / f"{name}.npz", **{k: v[chosen] for k, v in features.items()})
    report = {name: {"images": len(idx), "class_counts": class_counts(features["labels"][idx], classes)} for name, idx in indices.items()}
    write_json_atomic(report, paths.METRICS / "split.json")
    print("split: " + ", ".join(f"{name} {len(idx)}" for name, idx in indices.items()))


if __name__ == "__main__":
    run_stage(main)
