"""Finetune (seed step 8d): the pretrained torchvision backbone (default resnet18) with its
head replaced by a two-class layer; every layer trains, the backbone and the new head each
at their own learning rate, with the ``augment`` pipeline on the fly; the best epoch by
validation accuracy is kept.

in: models/pretrain/<finetune.architecture>, data/processed/train_balanced.npz, data/processed/split/val.npz,
    data/processed/classes.json
out: models/finetune/{model.pt,model.json}, metrics/finetune/ (DVCLive)
params: model_seed, finetune.*, augment.{hflip,rotation,crop_scale,brightness,contrast,saturation,hue}
"""
from __future__ import annotations

from lifecycle.augmentation import Augmenting
from lifecycle.backbones import finetune_groups, load_backbone
from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.params import load_params
from lifecycle.models import check_architecture, check_image_size, load_spec
from lifecycle.training.loop import FitConfig
from lifecycle.training.stage import classifier_spec, fit_stage


def main() -> None:
    pipeline = load_params()
    params, augment, seed = pipeline.finetune, pipeline.augment, pipeline.model_seed
    check_architecture(params.architecture, "finetune.architecture", allow_seed_cnn=False)
    backbone = paths.PRETRAINED / params.architecture
    pretrained = load_spec(backbone)
    spec = classifier_spec(params.architecture, mean=pretrained.mean, std=pretrained.std)
    with fit_stage("finetune") as stage:
        model = stage.seeded(lambda: load_backbone(backbone, len(spec.classes)), seed)
        check_image_size(model, spec.architecture, spec.image_size)
        stage.fit_classifier(
            model,
            FitConfig.of(params, lr=params.lr_head, seed=seed, name="finetune"),
            spec,
            transform=Augmenting(augment) if params.augment else None,
            param_groups=finetune_groups(model, params.lr_backbone, params.lr_head),
            info={"backbone": pretrained.info.get("weights", "pretext"),
                  "params": {"finetune": params.model_dump(), "model_seed": seed,
                             "augment": augment.training_keys() if params.augment else None}},
        )


if __name__ == "__main__":
    run_stage(main)
