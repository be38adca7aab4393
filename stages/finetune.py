"""Finetune (seed step 8d): the pretrained torchvision backbone (default resnet18) with its
head replaced by a two-class layer; every layer trains, the backbone and the new head each
at their own learning rate, with the ``augment`` pipeline on the fly; the best epoch by
validation accuracy is kept.

in: models/pretrain/<finetune.architecture>, data/processed/train_balanced.npz, data/processed/split/val.npz,
    data/processed/classes.json
out: models/finetune/{model.pt,model.json}, metrics/finetune/ (DVCLive)
params: seed, finetune.*, augment.{hflip,rotation,crop_scale,brightness,contrast,saturation,hue}
"""
from __future__ import annotations

import dataclasses

import torch

from lifecycle import paths
from lifecycle.augmentation import AugmentParams
from lifecycle.backbones import FinetuneParams, finetune_groups, load_backbone
from lifecycle.errors import run_stage
from lifecycle.io import read_arrays, read_json
from lifecycle.models import ModelSpec, check_image_size, load_spec, save_model
from lifecycle.params import GlobalParams, load_params
from lifecycle.training import (
    Augmenting,
    EpochLog,
    FitConfig,
    Samples,
    augmentation_info,
    distributed,
    fit,
    image_preparer,
    seed_everything,
)


def main() -> None:
    params = load_params("finetune", FinetuneParams)
    augment = load_params("augment", AugmentParams)
    seed = load_params(None, GlobalParams).seed
    classes = read_json(paths.CLASSES)
    backbone = paths.PRETRAINED / params.architecture
    pretrained = load_spec(backbone)
    train = read_arrays(paths.TRAIN_BALANCED)
    val = read_arrays(paths.VAL)
    spec = ModelSpec(
        architecture=params.architecture,
        classes=list(classes["classes"]),
        image_size=int(classes["image_size"]),
        mean=pretrained.mean,
        std=pretrained.std,
    )

    with distributed() as cluster:
        seed_everything(seed)
        model = load_backbone(backbone, len(spec.classes))
        check_image_size(model, spec.architecture, spec.image_size)
        config = FitConfig(
            epochs=params.epochs, batch_size=params.batch_size, lr=params.lr_head, seed=seed,
            weight_decay=params.weight_decay, workers=1 if cluster.world_size == 1 else 0, name="finetune",
        )
        log = EpochLog(paths.live_dir("finetune")) if cluster.is_main else None
        result = fit(
            model,
            Samples.from_images(train["images"], train["labels"]),
            Samples.from_images(val["images"], val["labels"]),
            config,
            cluster=cluster,
            prepare=image_preparer(spec.mean, spec.std),
            transform=Augmenting(augment, spec.image_size) if params.augment else None,
            param_groups=finetune_groups(model, params.lr_backbone, params.lr_head),
            log=log,
        )
        if cluster.is_main:
            summary = result.summary()
            log.close(summary)
            info = {
                "stage": "finetune",
                **summary,
                "world_size": result.world_size,
                "backbone": pretrained.info.get("weights", "pretext"),
                "params": {"finetune": dataclasses.asdict(params), "seed": seed,
                           "augment": augmentation_info(augment) if params.augment else None},
            }
            save_model(model, dataclasses.replace(spec, info=info), paths.model_dir("finetune"))
            print(f"finetune: kept epoch {summary['best_epoch']} (val accuracy {summary['val']['accuracy']:.4f})")
        if cluster.distributed:
            torch.distributed.barrier()


if __name__ == "__main__":
    run_stage(main)
