"""Training throughput: images per second of the project's training loop
(lifecycle.training.loop.fit) against a bare PyTorch loop over the same preloaded uint8 tensors,
with the same model (the configured seed CNN), the same batch size and the same number of
epochs, in one run. The ratio is the price of everything the loop adds: seeded sampler and
loader, per-sample seeds, validation and best-epoch bookkeeping, progress and metrics.

Both loops run twice, alternating (bare, ours, bare, ours), and the faster of each pair
counts, so a burst of load from another process on a shared machine hurts neither alone.
``--augment`` adds a third figure: our loop with the augment pipeline on the fly.

usage: python benchmarks/training_throughput.py [--images 1024] [--epochs 2] [--augment]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lifecycle.core import paths  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402
from lifecycle.augmentation import Augmenting  # noqa: E402
from lifecycle.core.schema import AugmentParams  # noqa: E402
from lifecycle.models import ModelSpec, build_model, to_model_input  # noqa: E402
from lifecycle.training.loop import FitConfig, Samples, fit  # noqa: E402
from lifecycle.training.runtime import Cluster, distributed, seed_everything  # noqa: E402


def configured() -> tuple[int, list[int], int, float]:
    params = yaml.safe_load(paths.PARAMS.read_text())
    return (params["featurize"]["image_size"], params["train"]["channels"], params["batch_size"], params["lr"])


def fresh_model(spec: ModelSpec) -> nn.Module:
    seed_everything(0)
    return build_model(spec)


def bare_loop(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, lr: float, epochs: int,
              device: torch.device) -> float:
    """The textbook loop (the seed's step 8b) over tensors already in memory; returns seconds."""
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    model.train()
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(to_model_input(images[index].to(device))), labels[index].to(device))
            loss.backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def our_loop(model: nn.Module, train: Samples, val: Samples, batch_size: int, lr: float, epochs: int,
             cluster: Cluster, transform=None) -> float:
    config = FitConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=0, workers=1 if transform else 0,
                       name="benchmark")
    started = time.perf_counter()
    fit(model, train, val, config, cluster=cluster, transform=transform)
    if cluster.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="training images (random uint8, preloaded)")
    parser.add_argument("--val-images", type=int, default=64, help="validation images our loop evaluates per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--augment", action="store_true", help="also time our loop with augment.* on the fly")
    args = parser.parse_args()

    image_size, channels, batch_size, lr = configured()
    spec = ModelSpec("seed_cnn", ["cat", "dog"], image_size, arguments={"channels": channels})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images + args.val_images, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, size=len(images))
    all_samples = Samples.from_images(images, labels)
    train = Samples(all_samples.inputs[: args.images], all_samples.labels[: args.images])
    val = Samples(all_samples.inputs[args.images :], all_samples.labels[args.images :])

    with distributed() as cluster:
        device = cluster.device
        # warm up both paths (allocator, kernels), then alternate
        bare_loop(fresh_model(spec), train.inputs[:batch_size], train.labels[:batch_size], batch_size, lr, 1, device)
        bare, ours = [], []
        for _ in range(2):
            bare.append(bare_loop(fresh_model(spec), train.inputs, train.labels, batch_size, lr, args.epochs, device))
            ours.append(our_loop(fresh_model(spec), train, val, batch_size, lr, args.epochs, cluster))
        if args.augment:
            params = yaml.safe_load(paths.PARAMS.read_text())["augment"]
            augmenting = Augmenting(AugmentParams(**params), image_size)
            augmented = our_loop(fresh_model(spec), train, val, batch_size, lr, args.epochs, cluster, augmenting)
    seen = args.images * args.epochs
    bare_rate, our_rate = seen / min(bare), seen / min(ours)
    print(f"model: seed_cnn {channels} at {image_size}x{image_size}, batch {batch_size}, {args.images} images x "
          f"{args.epochs} epochs, device {device}, torch threads {torch.get_num_threads()}")
    print(f"bare PyTorch loop:      {bare_rate:8.1f} images/s")
    print(f"lifecycle.training.fit: {our_rate:8.1f} images/s (validating {args.val_images} images per epoch)")
    print(f"ratio fit / bare:       {our_rate / bare_rate:8.2f}")
    if args.augment:
        print(f"fit with augment.* on the fly (1 loader worker): {seen / augmented:8.1f} images/s "
              f"(ratio to bare {seen / augmented / bare_rate:.2f})")


if __name__ == "__main__":
    main()
