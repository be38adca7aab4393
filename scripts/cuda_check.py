"""Check the CUDA path of the training loop on a machine with a GPU (the project never needs one).

Trains the seed CNN and resnet18 twice each on tiny separable images with the pipeline's
own loop (`lifecycle.training.loop.fit`, with the batch augmentation on the device) and
deterministic settings, and reports the device, the accuracy reached and whether the two
runs gave bit-identical weights. Prints one JSON line.

usage: python scripts/cuda_check.py
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lifecycle.augmentation import Augmenting, BatchAugmentation  # noqa: E402
from lifecycle.models import ModelSpec, build_model  # noqa: E402
from lifecycle.training.loop import FitConfig, Samples, fit  # noqa: E402
from lifecycle.training.runtime import distributed, seed_everything  # noqa: E402


def separable(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    images = rng.integers(0, 90, size=(count, size, size, 3), dtype=np.uint8)
    images[labels == 1, size // 4: 3 * size // 4, size // 4: 3 * size // 4, :] += 150
    return images, labels


def run(architecture: str, arguments: dict, size: int) -> dict:
    images, labels = separable(256, size, seed=1)
    train, val = Samples.from_images(images[:192], labels[:192]), Samples.from_images(images[192:], labels[192:])
    spec = ModelSpec(architecture=architecture, classes=["cat", "dog"], image_size=size, arguments=arguments)
    digests, outcome = [], {}
    for _ in range(2):
        seed_everything(0)
        model = build_model(spec)
        started = time.perf_counter()
        with distributed() as cluster:
            result = fit(model, train, val, FitConfig(epochs=3, batch_size=32, lr=0.003, seed=0, name=architecture),
                         cluster=cluster, transform=Augmenting(dataclasses.asdict(BatchAugmentation())))
            outcome["world_size"] = cluster.world_size
        seconds = time.perf_counter() - started
        state = model.state_dict()
        digests.append(hashlib.sha256(b"".join(state[k].detach().cpu().numpy().tobytes() for k in sorted(state))).hexdigest())
        outcome |= {"device": str(next(model.parameters()).device), "best_val_accuracy": max(r.val_accuracy for r in result.history),
                   "seconds": round(seconds, 2)}
    outcome["bit_identical_reruns"] = digests[0] == digests[1]
    return outcome


def main() -> None:
    report = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for architecture, arguments, size in [("seed_cnn", {"channels": [16, 32]}, 32), ("resnet18", {}, 32)]:
        try:
            report[architecture] = run(architecture, arguments, size)
        except Exception as error:  # report every failure of the path being checked
            report[architecture] = {"error": f"{type(error).__name__}: {error}"[:500]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
