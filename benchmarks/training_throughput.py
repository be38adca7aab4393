"""Training throughput: images per second of the project's training loop
(lifecycle.training.loop.fit) against a bare PyTorch loop, with and without the ``augment.*``
pipeline, in one run, on the device training uses (CUDA when there is one).

Both loops train the configured seed CNN (params.yaml: featurize.image_size, train.channels,
batch_size, lr) on the same random uint8 images, already on the device (moved once). The
bare loop is the textbook one (the seed's step 8b): shuffle, slice, normalise, step. ``fit``
adds the seeded sampler, validation and best-epoch bookkeeping, progress and metrics, and
with augmentation the batch pipeline of lifecycle/augmentation.py (every image its own
flip, rotation, resized crop and colour jitter, on the device). The figures:

- fit / bare, no augmentation: what the loop itself costs;
- fit with augmentation / bare (no augmentation): the figure the README quotes (target on
  two CPU cores: at least 0.9);
- bare with the same batch augmentation / bare: what augmentation alone costs.

Each configuration runs ``--repeats`` times, interleaved (bare, fit, fit+augment,
bare+augment, bare, ...), and the fastest of each counts, so a burst of load from another
process on a shared machine hurts none alone. Needs only PyTorch, torchvision, numpy,
pandas, Pillow and PyYAML (tests/test_benchmarks.py runs it with the others blocked).

usage: python benchmarks/training_throughput.py [--images 1024] [--epochs 2] [--batch-size N] [--repeats 2]
       python benchmarks/training_throughput.py --numerics native,portable [--images ...]

``--numerics native,portable`` compares the CPU numerics modes (lifecycle/core/numerics.py;
docs/numerics.md) in one run: the mode is fixed when torch loads, so each run of ``fit`` (and
``fit`` with augmentation) is a subprocess with ``LIFECYCLE_NUMERICS`` set, the modes
interleaved ``--repeats`` times, the fastest of each counting; it prints images/s per mode and
the ratio of portable's training time to native's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# lifecycle first: it sets the OpenMP wait policy before torch loads (the same for every loop here)
from lifecycle.augmentation import Augmenting, BatchAugmentation  # noqa: E402
from lifecycle.core import paths  # noqa: E402
from lifecycle.models import ModelSpec, build_model, to_model_input  # noqa: E402
from lifecycle.training.loop import FitConfig, Samples, fit  # noqa: E402
from lifecycle.training.runtime import Cluster, distributed, seed_everything  # noqa: E402
from benchmarks.table_row import load_average, print_row  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402


def configured() -> dict:
    params = yaml.safe_load(paths.PARAMS.read_text())
    return {"image_size": params["featurize"]["image_size"], "channels": params["train"]["channels"],
            "batch_size": params["batch_size"], "lr": params["lr"], "augment": params["augment"]}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "")
    return f"CPU {model or platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def fresh_model(spec: ModelSpec) -> nn.Module:
    seed_everything(0)
    return build_model(spec)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, lr: float, epochs: int,
              device: torch.device, augmentation: BatchAugmentation | None = None) -> float:
    """The textbook loop over tensors already on the device; returns seconds."""
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    model.train()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator).to(device)
        for start in range(0, len(images), batch_size):
            index = order[start : start + batch_size]
            batch = images[index]
            if augmentation is not None:
                batch = augmentation(batch, generator)
            optimizer.zero_grad()
            loss = loss_fn(model(to_model_input(batch)), labels[index])
            loss.backward()
            optimizer.step()
    synchronize(device)
    return time.perf_counter() - started


def our_loop(model: nn.Module, train: Samples, val: Samples, batch_size: int, lr: float, epochs: int,
             cluster: Cluster, transform=None) -> float:
    config = FitConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=0, name="benchmark")
    synchronize(cluster.device)
    started = time.perf_counter()
    fit(model, train, val, config, cluster=cluster, transform=transform)
    synchronize(cluster.device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="training images (random uint8)")
    parser.add_argument("--val-images", type=int, default=64, help="validation images fit evaluates per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="default: params.yaml batch_size")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration; the fastest counts")
    parser.add_argument("--numerics", default=None,
                        help="compare CPU numerics modes, e.g. native,portable (one subprocess per run, interleaved)")
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # configurations to run (comma-separated)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # print images/s as JSON
    args = parser.parse_args()
    if args.numerics:
        compare_numerics(args)
        return

    settings = configured()
    image_size, channels, lr = settings["image_size"], settings["channels"], settings["lr"]
    batch_size = args.batch_size or settings["batch_size"]
    spec = ModelSpec("seed_cnn", ["cat", "dog"], image_size, arguments={"channels": channels})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images + args.val_images, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, size=len(images))
    every = Samples.from_images(images, labels)
    train = Samples(every.inputs[: args.images], every.labels[: args.images])
    val = Samples(every.inputs[args.images :], every.labels[args.images :])
    augmenting = Augmenting(settings["augment"])

    with distributed() as cluster:
        device = cluster.device
        on_device = train.inputs.to(device), train.labels.to(device)
        runs = {
            "bare": lambda: bare_loop(fresh_model(spec), *on_device, batch_size, lr, args.epochs, device),
            "fit": lambda: our_loop(fresh_model(spec), train, val, batch_size, lr, args.epochs, cluster),
            "fit+augment": lambda: our_loop(fresh_model(spec), train, val, batch_size, lr, args.epochs, cluster,
                                            augmenting),
            "bare+augment": lambda: bare_loop(fresh_model(spec), *on_device, batch_size, lr, args.epochs, device,
                                              augmenting.augmentation),
        }
        if args.only:
            runs = {name: run for name, run in runs.items() if name in args.only.split(",")}
        # warm up every path (allocator, kernels), then interleave
        for name in runs:
            bare_loop(fresh_model(spec), on_device[0][:batch_size], on_device[1][:batch_size], batch_size, lr, 1,
                      device, augmenting.augmentation if name.endswith("augment") else None)
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                seconds[name].append(run())
    seen = args.images * args.epochs
    rate = {name: seen / min(times) for name, times in seconds.items()}
    if args.json:
        print(json.dumps({"rate": rate, "device": device_name(device), "capability": torch.backends.cpu.get_cpu_capability(),
                          "threads": torch.get_num_threads()}))
        return
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    print(f"model: seed_cnn {channels} at {image_size}x{image_size}, batch {batch_size}, {args.images} images x "
          f"{args.epochs} epochs, fastest of {args.repeats} interleaved runs each")
    print(f"bare PyTorch loop:                {rate['bare']:9.1f} images/s")
    print(f"fit:                              {rate['fit']:9.1f} images/s (validating {args.val_images} images per epoch)")
    print(f"fit with augment.*:               {rate['fit+augment']:9.1f} images/s")
    print(f"bare loop with augment.*:         {rate['bare+augment']:9.1f} images/s")
    print(f"ratio fit / bare:                 {rate['fit'] / rate['bare']:9.2f}")
    print(f"ratio fit with augment.* / bare:  {rate['fit+augment'] / rate['bare']:9.2f}")
    print(f"ratio bare with augment.* / bare: {rate['bare+augment'] / rate['bare']:9.2f}")
    if {"bare", "fit", "fit+augment"} <= rate.keys():
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
        print_row(f"training loop (`fit`) with `augment.*` / bare PyTorch loop, seed CNN, batch {batch_size}, {device.type}",
                  f"**{rate['fit+augment'] / rate['bare']:.2f}** ({rate['fit+augment']:.0f} vs {rate['bare']:.0f} "
                  f"images/s; `fit` alone {rate['fit'] / rate['bare']:.2f}; load {load_average()})", gpu)


def compare_numerics(args: argparse.Namespace) -> None:
    """Each mode's fit and fit+augment in their own processes, the modes interleaved; fastest of each."""
    modes = [mode.strip() for mode in args.numerics.split(",") if mode.strip()]
    common = ["--images", str(args.images), "--val-images", str(args.val_images), "--epochs", str(args.epochs),
              "--repeats", "1", "--only", "fit,fit+augment", "--json"]
    if args.batch_size:
        common += ["--batch-size", str(args.batch_size)]
    best: dict[str, dict[str, float]] = {mode: {} for mode in modes}
    seen: dict[str, dict] = {}
    for _ in range(args.repeats):
        for mode in modes:
            result = subprocess.run([sys.executable, __file__, *common], capture_output=True, text=True, check=True,
                                    env={**os.environ, "LIFECYCLE_NUMERICS": mode})
            row = json.loads(result.stdout.strip().splitlines()[-1])
            seen[mode] = row
            for name, rate in row["rate"].items():
                best[mode][name] = max(best[mode].get(name, 0.0), rate)
    print(f"device: {seen[modes[0]]['device']}; torch {torch.__version__}")
    print(f"seed_cnn, {args.images} images x {args.epochs} epochs, fastest of {args.repeats} interleaved runs per mode")
    for mode in modes:
        print(f"{mode:10s} ({seen[mode]['capability']}, {seen[mode]['threads']} threads): "
              f"fit {best[mode]['fit']:8.1f} images/s, fit with augment.* {best[mode]['fit+augment']:8.1f} images/s")
    for mode in modes[1:]:
        for name in ("fit", "fit+augment"):
            print(f"training time {mode} / {modes[0]}, {name:11s}: {best[modes[0]][name] / best[mode][name]:6.2f}")
    for mode in modes[1:]:
        print_row(f"training time, numerics `{mode}` / `{modes[0]}`, `fit` with `augment.*`, seed CNN",
                  f"**{best[modes[0]]['fit+augment'] / best[mode]['fit+augment']:.2f}** "
                  f"({best[mode]['fit+augment']:.0f} vs {best[modes[0]]['fit+augment']:.0f} images/s; load {load_average()})")


if __name__ == "__main__":
    main()
