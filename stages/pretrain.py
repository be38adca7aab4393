"""Pretrain: a backbone for ``finetune`` and ``transfer`` without internet and without
labels. ``weights: pretext`` (default) learns it by predicting the rotation (0, 90, 180,
270 degrees) of each training image; ``imagenet`` takes torchvision's ImageNet weights
(the downloaded file becomes the output, pinned by dvc.lock); ``none`` keeps a seeded
random initialisation. One backbone per architecture that finetune or transfer names.

in: data/processed/split/train.npz, data/processed/split/val.npz (images only, labels unused), data/processed/classes.json
out: models/pretrain/<architecture>/{model.pt,model.json}, metrics/pretrain/ (DVCLive, pretext task)
params: model_seed, pretrain.*, finetune.architecture, transfer.architecture,
        augment.{hflip,rotation,crop_scale,brightness,contrast,saturation,hue}
"""
from __future__ import annotations

from contextlib import nullcontext

from lifecycle.augmentation import Augmenting
from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import atomic_dir, read_json
from lifecycle.core.params import load_params
from lifecycle.models import build_model, check_architecture, check_image_size, save_model
from lifecycle.pretraining import RotationPretext, fetch_imagenet, pretext_spec, rotated_for_validation
from lifecycle.training.loop import FitConfig, Samples, image_preparer
from lifecycle.training.stage import classifier_spec, fit_stage, read_samples


def main() -> None:
    pipeline = load_params()
    params, augment, seed = pipeline.pretrain, pipeline.augment, pipeline.model_seed
    check_architecture(pipeline.finetune.architecture, "finetune.architecture", allow_seed_cnn=False)
    check_architecture(pipeline.transfer.architecture, "transfer.architecture", allow_seed_cnn=False)
    architectures = sorted({pipeline.finetune.architecture, pipeline.transfer.architecture})
    image_size = int(read_json(paths.CLASSES)["image_size"])
    train, val = read_samples(paths.TRAIN), read_samples(paths.VAL)

    with fit_stage("pretrain") as stage, (atomic_dir(paths.PRETRAINED) if stage.cluster.is_main else nullcontext()) as staging:
        summary = {}
        for architecture in architectures:
            folder = staging / architecture if staging else None
            if params.weights == "imagenet":
                if stage.cluster.is_main:
                    spec = fetch_imagenet(architecture, image_size, folder)
                    summary[architecture] = {"weights": "imagenet"}
                    print(f"pretrain {architecture}: ImageNet weights {spec.info['file']} (sha256 {spec.info['sha256'][:12]})")
                continue
            if params.weights == "none":
                spec = classifier_spec(architecture, info={"weights": "none", "model_seed": seed})
                model = stage.seeded(lambda: build_model(spec), seed)
                check_image_size(model, architecture, image_size)
                if stage.cluster.is_main:
                    save_model(model, spec, folder)
                    summary[architecture] = {"weights": "none"}
                    print(f"pretrain {architecture}: random initialisation (weights: none)")
                continue
            spec = pretext_spec(architecture, image_size)
            model = stage.seeded(lambda: build_model(spec), seed)
            check_image_size(model, architecture, image_size)
            stage.log_under(f"{architecture}/")
            stage.fit_and_save(
                model,
                train,
                Samples(*rotated_for_validation(val.inputs)),
                FitConfig.of(params, lr=params.lr, seed=seed, name=f"pretrain {architecture}"),
                spec,
                folder,
                prepare=image_preparer(spec.mean, spec.std),
                transform=RotationPretext(Augmenting(augment) if params.augment else None),
                info={"weights": "pretext", "task": "rotation",
                      "params": {"pretrain": params.model_dump(), "model_seed": seed,
                                 "augment": augment.training_keys() if params.augment else None}},
            )
            summary[architecture] = {"weights": "pretext", **stage.summary}
        stage.report(summary)


if __name__ == "__main__":
    run_stage(main)
