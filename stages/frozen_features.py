"""Frozen features (for seed step 8f): the pretrained backbone of ``transfer`` without its
last layer, run once over the training and validation images. ``transfer`` trains only a
new last layer, so it never needs the backbone again: its head trains on these in seconds,
and changing its learning rate or epochs does not recompute them.

in: models/pretrain/<transfer.architecture>, data/processed/train_balanced.npz, data/processed/split/val.npz
out: data/processed/frozen_features.npz (train_features, train_labels, val_features, val_labels)
params: transfer.architecture
"""
from __future__ import annotations

import numpy as np

from lifecycle.backbones import feature_extractor, frozen_features
from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import read_arrays, write_arrays_atomic
from lifecycle.core.params import load_params
from lifecycle.models import check_image_size, load_model
from lifecycle.training.runtime import deterministic, distributed


def main() -> None:
    params = load_params().transfer
    train = read_arrays(paths.TRAIN_BALANCED)
    val = read_arrays(paths.VAL)
    with distributed() as cluster:
        if not cluster.is_main:
            return  # one pass over the images; nothing to share
        deterministic()  # no seed: a forward pass in eval mode draws nothing at random
        model, spec = load_model(paths.PRETRAINED / params.architecture, device=cluster.device)
        check_image_size(model, spec.architecture, spec.image_size)
        body = feature_extractor(model)
        arrays = {}
        for name, split in (("train", train), ("val", val)):
            features = frozen_features(body, split["images"], spec, cluster.device, desc=f"frozen features: {name}")
            arrays[f"{name}_features"] = features.numpy().astype("float32")
            arrays[f"{name}_labels"] = np.asarray(split["labels"], dtype=np.int64)
        write_arrays_atomic(paths.FROZEN_FEATURES, **arrays)
        print(f"frozen_features ({params.architecture}): train {tuple(arrays['train_features'].shape)}, "
              f"val {tuple(arrays['val_features'].shape)}")


if __name__ == "__main__":
    run_stage(main)
