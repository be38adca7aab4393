"""Transfer (seed step 8f): the pretrained backbone frozen, its last classification layer
replaced by a two-class one, and only that layer trained, on the frozen features computed
once by ``frozen_features`` (seconds per run). The head trains on standardised features and
the standardisation is folded into its weights afterwards. The saved model is the whole network, so
evaluate and serve use it like any other.

in: data/processed/frozen_features.npz, models/pretrain/<transfer.architecture>, data/processed/classes.json
out: models/transfer/{model.pt,model.json}, metrics/transfer/ (DVCLive)
params: seed, transfer.*
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from lifecycle import paths
from lifecycle.backbones import FeatureScaling, TransferParams, attach_head, load_backbone
from lifecycle.errors import run_stage
from lifecycle.io import read_arrays, read_json
from lifecycle.models import ModelSpec, load_spec, save_model
from lifecycle.params import GlobalParams, load_params
from lifecycle.training import EpochLog, FitConfig, Samples, distributed, features_preparer, fit, seed_everything


def main() -> None:
    params = load_params("transfer", TransferParams)
    seed = load_params(None, GlobalParams).seed
    classes = read_json(paths.CLASSES)
    backbone = paths.PRETRAINED / params.architecture
    pretrained = load_spec(backbone)
    features = read_arrays(paths.FROZEN_FEATURES)
    scaling = FeatureScaling.of(torch.from_numpy(features["train_features"]))
    train = Samples(scaling.apply(torch.from_numpy(features["train_features"])), torch.from_numpy(features["train_labels"]))
    val = Samples(scaling.apply(torch.from_numpy(features["val_features"])), torch.from_numpy(features["val_labels"]))
    spec = ModelSpec(
        architecture=params.architecture,
        classes=list(classes["classes"]),
        image_size=int(classes["image_size"]),
        mean=pretrained.mean,
        std=pretrained.std,
    )

    with distributed() as cluster:
        seed_everything(seed)
        head = nn.Linear(train.inputs.shape[1], len(spec.classes))
        config = FitConfig(
            epochs=params.epochs, batch_size=params.batch_size, lr=params.lr, seed=seed,
            weight_decay=params.weight_decay, name="transfer",
        )
        log = EpochLog(paths.live_dir("transfer")) if cluster.is_main else None
        result = fit(head, train, val, config, cluster=cluster, prepare=features_preparer(), log=log)
        if cluster.is_main:
            summary = result.summary()
            log.close(summary)
            model = attach_head(load_backbone(backbone, len(spec.classes)), scaling.fold(head.cpu()))
            info = {
                "stage": "transfer",
                **summary,
                "world_size": result.world_size,
                "backbone": pretrained.info.get("weights", "pretext"),
                "trained": "last layer only (frozen backbone features)",
                "params": {"transfer": dataclasses.asdict(params), "seed": seed},
            }
            save_model(model, dataclasses.replace(spec, info=info), paths.model_dir("transfer"))
            print(f"transfer: kept epoch {summary['best_epoch']} (val accuracy {summary['val']['accuracy']:.4f})")
        if cluster.distributed:
            torch.distributed.barrier()


if __name__ == "__main__":
    run_stage(main)
