"""Train (seed steps 8a-8b): the seed's CNN from scratch, Adam and cross-entropy, on the
balanced training split with the ``augment`` pipeline on the fly; the best epoch by
validation accuracy is kept. Runs as is or under ``torchrun --nproc_per_node N``.

in: data/processed/train_balanced.npz, data/processed/split/val.npz, data/processed/classes.json
out: models/train/{model.pt,model.json}, metrics/train/ (DVCLive: per-epoch curves, kept epoch)
params: model_seed, lr, epochs, batch_size, train.*, augment.{hflip,rotation,crop_scale,brightness,contrast,saturation,hue}
"""
from __future__ import annotations

from lifecycle.augmentation import Augmenting
from lifecycle.core.errors import run_stage
from lifecycle.core.params import load_params
from lifecycle.models import build_model, check_architecture, check_image_size
from lifecycle.training.loop import FitConfig
from lifecycle.training.stage import classifier_spec, fit_stage


def main() -> None:
    pipeline = load_params()
    params, augment, seed = pipeline.train, pipeline.augment, pipeline.model_seed
    check_architecture(params.architecture, "train.architecture", allow_seed_cnn=True)
    spec = classifier_spec(params.architecture,
                           arguments={"channels": list(params.channels)} if params.architecture == "seed_cnn" else {})
    with fit_stage("train") as stage:
        model = stage.seeded(lambda: build_model(spec), seed)
        check_image_size(model, spec.architecture, spec.image_size)
        stage.fit_classifier(
            model,
            FitConfig(epochs=pipeline.epochs, batch_size=pipeline.batch_size, lr=pipeline.lr, seed=seed,
                      weight_decay=params.weight_decay, name="train"),
            spec,
            transform=Augmenting(augment) if params.augment else None,
            info={"params": {"lr": pipeline.lr, "epochs": pipeline.epochs, "batch_size": pipeline.batch_size,
                             "train": params.model_dump(), "model_seed": seed,
                             "augment": augment.training_keys() if params.augment else None}},
        )


if __name__ == "__main__":
    run_stage(main)
