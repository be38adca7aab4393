"""Transfer (seed step 8f): the pretrained backbone frozen, its last classification layer
replaced by a two-class one, and only that layer trained, on the frozen features computed
once by ``frozen_features`` (seconds per run). The head trains on standardised features and
the standardisation is folded into its weights afterwards. The saved model is the whole
network, so evaluate and serve use it like any other.

in: data/processed/frozen_features.npz, models/pretrain/<transfer.architecture>, data/processed/classes.json
out: models/transfer/{model.pt,model.json}, metrics/transfer/ (DVCLive)
params: model_seed, transfer.*
"""
from __future__ import annotations

import torch
from torch import nn

from lifecycle.backbones import FeatureScaling, attach_head, load_backbone
from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import read_arrays
from lifecycle.core.params import load_params
from lifecycle.models import load_spec
from lifecycle.training.loop import FitConfig, Samples, features_preparer
from lifecycle.training.stage import classifier_spec, fit_stage


def main() -> None:
    pipeline = load_params()
    params, seed = pipeline.transfer, pipeline.model_seed
    backbone = paths.PRETRAINED / params.architecture
    pretrained = load_spec(backbone)
    features = read_arrays(paths.FROZEN_FEATURES)
    scaling = FeatureScaling.of(torch.from_numpy(features["train_features"]))
    train = Samples(scaling.apply(torch.from_numpy(features["train_features"])), torch.from_numpy(features["train_labels"]))
    val = Samples(scaling.apply(torch.from_numpy(features["val_features"])), torch.from_numpy(features["val_labels"]))
    spec = classifier_spec(params.architecture, mean=pretrained.mean, std=pretrained.std)
    with fit_stage("transfer") as stage:
        head = stage.seeded(lambda: nn.Linear(train.inputs.shape[1], len(spec.classes)), seed)
        stage.fit_and_save(
            head, train, val,
            FitConfig.of(params, lr=params.lr, seed=seed, name="transfer"),
            spec,
            paths.model_dir("transfer"),
            prepare=features_preparer(),
            saved=lambda trained: attach_head(load_backbone(backbone, len(spec.classes)), scaling.fold(trained.cpu())),
            info={"backbone": pretrained.info.get("weights", "pretext"),
                  "trained": "last layer only (frozen backbone features)",
                  "params": {"transfer": params.model_dump(), "model_seed": seed}},
        )


if __name__ == "__main__":
    run_stage(main)
