"""Where one epoch of the ``train`` stage goes: its data, model and params (params.yaml), the
parts of one training epoch timed one after another on the CPU (in ``fit`` the next batch's
gather, augmentation and preparation overlap the step on a second thread): batch gather,
augmentation, normalisation, forward/backward/optimizer step, validation, one DVCLive log.

Needs the pipeline's outputs up to ``synthesize`` (dvc checkout or dvc repro synthesize).

usage: python benchmarks/train_epoch_profile.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lifecycle.augmentation import Augmenting  # noqa: E402  (first: sets the OpenMP policy before torch)
from lifecycle.core import paths  # noqa: E402
from lifecycle.core.io import read_arrays, read_json  # noqa: E402
from lifecycle.core.params import load_params  # noqa: E402
from lifecycle.models import ModelSpec, build_model, image_preparer, predict_logits  # noqa: E402
from lifecycle.training.log import EpochLog  # noqa: E402
from lifecycle.training.loop import EpochRecord, Samples  # noqa: E402
from lifecycle.training.runtime import seed_everything  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402


def main() -> None:
    params = load_params()
    classes = read_json(paths.CLASSES)
    train = read_arrays(paths.TRAIN_BALANCED)
    val = read_arrays(paths.VAL)
    spec = ModelSpec("seed_cnn", list(classes["classes"]), int(classes["image_size"]),
                     arguments={"channels": list(params.train.channels)})
    samples = Samples.from_images(train["images"], train["labels"])
    validation = Samples.from_images(val["images"], val["labels"])
    seed_everything(params.seed)
    model = build_model(spec).to(memory_format=torch.channels_last)  # as fit does on a CPU
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    loss_fn = nn.CrossEntropyLoss()
    normalise = image_preparer(spec.mean, spec.std)

    def prepare(batch: torch.Tensor) -> torch.Tensor:
        return normalise(batch).contiguous(memory_format=torch.channels_last)

    augmenting = Augmenting(params.augment)
    seconds = dict.fromkeys(("gather", "augment", "prepare", "step", "validation", "dvclive"), 0.0)
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(params.seed))
    for number, start in enumerate(range(0, len(order), params.batch_size)):
        t0 = time.perf_counter()
        index = order[start : start + params.batch_size]
        images, labels = samples.inputs[index], samples.labels[index]
        t1 = time.perf_counter()
        images, labels = augmenting(images, labels, torch.Generator().manual_seed(number))
        t2 = time.perf_counter()
        inputs = prepare(images)
        t3 = time.perf_counter()
        optimizer.zero_grad()
        loss_fn(model(inputs), labels).backward()
        optimizer.step()
        t4 = time.perf_counter()
        for name, spent in zip(("gather", "augment", "prepare", "step"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            seconds[name] += spent
    started = time.perf_counter()
    predict_logits(model.eval(), validation.inputs, prepare, batch_size=max(params.batch_size, 128))
    seconds["validation"] = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        log = EpochLog(Path(folder) / "live")
        started = time.perf_counter()
        log.log(EpochRecord(1, 0.5, 0.5, 0.5, 0.5))
        seconds["dvclive"] = time.perf_counter() - started
        log.discard()
    total = sum(seconds.values())
    print(f"one epoch of train: {len(samples)} images, batch {params.batch_size}, {len(validation)} validation "
          f"images, {torch.get_num_threads()} torch threads")
    for name, spent in seconds.items():
        print(f"  {name:11s} {spent:6.2f} s  {100 * spent / total:5.1f}%")
    print(f"  {'total':11s} {total:6.2f} s")


if __name__ == "__main__":
    main()
