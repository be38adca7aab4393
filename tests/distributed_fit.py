"""Run by tests/test_training.py under ``torchrun --nproc_per_node 2``: the training loop on
tiny separable images; rank 0 writes the model and its DVCLive log, every rank writes a
fingerprint of its final weights so the test can check that the processes agree.

usage: torchrun --standalone --nproc_per_node 2 tests/distributed_fit.py OUT_DIR
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from lifecycle.models import ModelSpec, build_model, save_model
from lifecycle.training.log import EpochLog
from lifecycle.training.loop import FitConfig, Samples, fit
from lifecycle.training.runtime import distributed, seed_everything


def separable_images(count: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Dark images with a bright square for class 1: trivially learnable."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    images = rng.integers(0, 90, size=(count, size, size, 3), dtype=np.uint8)
    images[labels == 1, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4, :] += 150
    return images, labels


def main(out: Path) -> None:
    images, labels = separable_images(96, seed=1)
    train = Samples.from_images(images[:64], labels[:64])
    val = Samples.from_images(images[64:], labels[64:])
    spec = ModelSpec(architecture="seed_cnn", classes=["cat", "dog"], image_size=16, arguments={"channels": [8]})
    with distributed() as cluster:
        seed_everything(0)
        model = build_model(spec)
        log = EpochLog(out / "live") if cluster.is_main else None
        config = FitConfig(epochs=4, batch_size=16, lr=0.01, seed=0, name="ddp")
        result = fit(model, train, val, config, cluster=cluster, on_epoch=log.log if log else None)
        state = model.state_dict()
        digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
        (out / f"rank{cluster.rank}.json").write_text(
            json.dumps({"rank": cluster.rank, "world_size": cluster.world_size, "digest": digest,
                        "best_epoch": result.best_epoch})
        )
        if cluster.is_main:
            log.close(result.summary())
            save_model(model, spec, out / "model")
            (out / "result.json").write_text(json.dumps({**result.summary(), "world_size": result.world_size}))
        if cluster.distributed:
            torch.distributed.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
