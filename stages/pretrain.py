"""Pretrain: a backbone for ``finetune`` and ``transfer`` without internet and without
labels. ``weights: pretext`` (default) learns it by predicting the rotation (0, 90, 180,
270 degrees) of each training image; ``imagenet`` takes torchvision's ImageNet weights
(the downloaded file becomes the output, pinned by dvc.lock); ``none`` keeps a seeded
random initialisation. One backbone per architecture that finetune or transfer names.

in: data/processed/split/train.npz, data/processed/split/val.npz (images only, labels unused), data/processed/classes.json
out: models/pretrain/<architecture>/{model.pt,model.json}, metrics/pretrain/ (DVCLive, pretext task)
params: seed, pretrain.*, finetune.architecture, transfer.architecture,
        augment.{hflip,rotation,crop_scale,brightness,contrast,saturation,hue}
"""
from __future__ import annotations

import dataclasses
from contextlib import nullcontext

import torch

from lifecycle import paths
from lifecycle.augmentation import AugmentParams
from lifecycle.backbones import (
    FinetuneParams,
    PretrainParams,
    RotationPretext,
    TransferParams,
    fetch_imagenet,
    pretext_spec,
    rotated_for_validation,
)
from lifecycle.errors import run_stage
from lifecycle.io import atomic_dir, read_arrays, read_json
from lifecycle.models import ModelSpec, build_model, check_image_size, save_model
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
    params = load_params("pretrain", PretrainParams)
    architectures = sorted({load_params("finetune", FinetuneParams).architecture,
                            load_params("transfer", TransferParams).architecture})
    augment = load_params("augment", AugmentParams)
    seed = load_params(None, GlobalParams).seed
    classes = read_json(paths.CLASSES)
    image_size = int(classes["image_size"])

    train = read_arrays(paths.TRAIN)
    val = read_arrays(paths.VAL)

    with distributed() as cluster, (atomic_dir(paths.PRETRAINED) if cluster.is_main else nullcontext()) as staging:
        log = EpochLog(paths.live_dir("pretrain")) if cluster.is_main else None
        summary = {}
        for architecture in architectures:
            folder = staging / architecture if staging else None
            seed_everything(seed)
            if params.weights == "imagenet":
                if cluster.is_main:
                    spec = fetch_imagenet(architecture, image_size, folder)
                    summary[architecture] = {"weights": "imagenet"}
                    print(f"pretrain {architecture}: ImageNet weights {spec.info['file']} (sha256 {spec.info['sha256'][:12]})")
                continue
            if params.weights == "none":
                spec = ModelSpec(architecture=architecture, classes=list(classes["classes"]), image_size=image_size,
                                 info={"weights": "none", "seed": seed})
                model = build_model(spec)
                check_image_size(model, architecture, image_size)
                if cluster.is_main:
                    save_model(model, spec, folder)
                    summary[architecture] = {"weights": "none"}
                    print(f"pretrain {architecture}: random initialisation (weights: none)")
                continue
            spec = pretext_spec(architecture, image_size)
            model = build_model(spec)
            check_image_size(model, architecture, image_size)
            config = FitConfig(
                epochs=params.epochs, batch_size=params.batch_size, lr=params.lr, seed=seed,
                weight_decay=params.weight_decay, workers=1 if cluster.world_size == 1 else 0,
                name=f"pretrain {architecture}",
            )
            if log is not None:
                log.start(f"{architecture}/")
            result = fit(
                model,
                Samples.from_images(train["images"], train["labels"]),
                Samples(*rotated_for_validation(Samples.from_images(val["images"], val["labels"]).inputs)),
                config,
                cluster=cluster,
                prepare=image_preparer(spec.mean, spec.std),
                transform=RotationPretext(Augmenting(augment, image_size) if params.augment else None),
                log=log,
            )
            if cluster.is_main:
                summary[architecture] = {"weights": "pretext", **result.summary()}
                info = {
                    "stage": "pretrain",
                    "weights": "pretext",
                    "task": "rotation",
                    **result.summary(),
                    "params": {"pretrain": dataclasses.asdict(params), "seed": seed,
                               "augment": augmentation_info(augment) if params.augment else None},
                }
                save_model(model, dataclasses.replace(spec, info=info), folder)
        if log is not None:
            log.close(summary)
            (paths.live_dir("pretrain") / "plots").mkdir(exist_ok=True)  # declared even when nothing trains
        if cluster.distributed:
            torch.distributed.barrier()


if __name__ == "__main__":
    run_stage(main)
