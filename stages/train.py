"""Train (seed steps 8a-8b): the seed's CNN from scratch, Adam and cross-entropy, on the
balanced training split with the ``augment`` pipeline on the fly; the best epoch by
validation accuracy is kept. Runs as is or under ``torchrun --nproc_per_node N``.

in: data/processed/train_balanced.npz, data/processed/split/val.npz, data/processed/classes.json
out: models/train/{model.pt,model.json}, metrics/train/ (DVCLive: per-epoch curves, kept epoch)
params: seed, lr, epochs, batch_size, train.*, augment.{hflip,rotation,crop_scale,brightness,contrast,saturation,hue}
"""
from __future__ import annotations

import dataclasses

import torch

from lifecycle import paths
from lifecycle.augmentation import AugmentParams
from lifecycle.errors import run_stage
from lifecycle.io import read_arrays, read_json
from lifecycle.models import ModelSpec, build_model, check_image_size, save_model
from lifecycle.params import GlobalParams, load_params
from lifecycle.training import (
    Augmenting,
    EpochLog,
    ExperimentParams,
    FitConfig,
    Samples,
    TrainParams,
    augmentation_info,
    distributed,
    fit,
    image_preparer,
    seed_everything,
)


def main() -> None:
    experiment = load_params(None, ExperimentParams)
    params = load_params("train", TrainParams)
    augment = load_params("augment", AugmentParams)
    seed = load_params(None, GlobalParams).seed
    classes = read_json(paths.CLASSES)
    train = read_arrays(paths.TRAIN_BALANCED)
    val = read_arrays(paths.VAL)

    spec = ModelSpec(
        architecture=params.architecture,
        classes=list(classes["classes"]),
        image_size=int(classes["image_size"]),
        arguments={"channels": list(params.channels)} if params.architecture == "seed_cnn" else {},
    )
    with distributed() as cluster:
        seed_everything(seed)
        model = build_model(spec)
        check_image_size(model, spec.architecture, spec.image_size)
        config = FitConfig(
            epochs=experiment.epochs, batch_size=experiment.batch_size, lr=experiment.lr, seed=seed,
            weight_decay=params.weight_decay, workers=1 if cluster.world_size == 1 else 0, name="train",
        )
        log = EpochLog(paths.live_dir("train")) if cluster.is_main else None
        result = fit(
            model,
            Samples.from_images(train["images"], train["labels"]),
            Samples.from_images(val["images"], val["labels"]),
            config,
            cluster=cluster,
            prepare=image_preparer(spec.mean, spec.std),
            transform=Augmenting(augment, spec.image_size) if params.augment else None,
            log=log,
        )
        if cluster.is_main:
            summary = result.summary()
            log.close(summary)
            info = {
                "stage": "train",
                **summary,
                "world_size": result.world_size,
                "params": {**dataclasses.asdict(experiment), "train": dataclasses.asdict(params), "seed": seed,
                           "augment": augmentation_info(augment) if params.augment else None},
            }
            save_model(model, dataclasses.replace(spec, info=info), paths.model_dir("train"))
            print(f"train: kept epoch {summary['best_epoch']} (val accuracy {summary['val']['accuracy']:.4f})")
        if cluster.distributed:
            torch.distributed.barrier()


if __name__ == "__main__":
    run_stage(main)
