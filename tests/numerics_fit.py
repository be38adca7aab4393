"""Run by tests/test_numerics.py, one subprocess per machine configuration: a few steps of the
project's training loop (lifecycle.training.loop.fit) on tiny seeded images, then one JSON line
with the sha256 of the kept weights and what torch ran on (capability, threads, numerics mode).

usage: python tests/numerics_fit.py seed_cnn|resnet18 [KEY=VALUE ...]

Each KEY=VALUE is put in the environment after the lifecycle package has applied the numerics
mode and before torch loads: how the tests hold a library lower than the mode would, or break
the mode on purpose. ``LIFECYCLE_NUMERICS`` chooses the mode, as for any entry point.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lifecycle  # noqa: E402,F401  - applies the numerics mode before torch loads

for _pair in sys.argv[2:]:
    _key, _, _value = _pair.partition("=")
    os.environ[_key] = _value

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lifecycle.core import numerics  # noqa: E402
from lifecycle.models import ModelSpec, build_model  # noqa: E402
from lifecycle.training.loop import FitConfig, Samples, fit  # noqa: E402
from lifecycle.training.runtime import seed_everything  # noqa: E402

# architecture -> (image side, training images, batch, epochs, constructor arguments): a few steps each
SIZES = {
    "seed_cnn": (32, 64, 16, 2, {"channels": [8, 16]}),   # 8 steps
    "resnet18": (32, 32, 16, 1, {}),                      # 2 steps
}


def main(architecture: str) -> None:
    side, count, batch, epochs, arguments = SIZES[architecture]
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(count + 16, side, side, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, size=len(images))
    train = Samples.from_images(images[:count], labels[:count])
    val = Samples.from_images(images[count:], labels[count:])
    spec = ModelSpec(architecture, ["cat", "dog"], side, arguments=arguments)
    seed_everything(0)
    model = build_model(spec)
    fit(model, train, val, FitConfig(epochs=epochs, batch_size=batch, lr=0.001, seed=0, name=architecture))
    state = model.state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    print(json.dumps({"architecture": architecture, "sha256": digest.hexdigest()[:16],
                      "capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                      "numerics": numerics.current()}))


if __name__ == "__main__":
    main(sys.argv[1])
