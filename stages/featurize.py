"""Featurize (seed step 3): encode labels (cat -> 0, dog -> 1) and decode every image once
into a compact uint8 array, so that no later stage opens an image file.

in: data/interim/imputed.csv, data/raw   out: data/processed/features.npz, data/processed/classes.json
params: featurize.*
"""
from __future__ import annotations

from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import write_arrays_atomic, write_json_atomic
from lifecycle.core.params import load_params
from lifecycle.features import decode_all, encode_labels
from lifecycle.manifest import read_manifest


def main() -> None:
    params = load_params().featurize
    manifest = read_manifest(paths.IMPUTED_MANIFEST)
    labels, classes = encode_labels(manifest["label"])
    images = decode_all(manifest, paths.RAW, params.image_size)
    write_arrays_atomic(
        paths.FEATURES,
        images=images,
        labels=labels,
        paths=manifest["image_path"].to_numpy(dtype=str),
    )
    write_json_atomic(
        {"classes": classes, "mapping": {name: i for i, name in enumerate(classes)}, "image_size": params.image_size},
        paths.CLASSES,
    )
    print(f"featurize: {len(images)} images of {params.image_size}x{params.image_size}, classes {classes}")


if __name__ == "__main__":
    run_stage(main)
