"""The one training loop: train, pretrain, finetune and transfer all call :func:`fit`.

In: a model, training and validation :class:`Samples` (uint8 images, or precomputed
features), a :class:`FitConfig`. Out: the model holding the weights of its best epoch by
validation accuracy (ties: lower validation loss), and a :class:`FitResult` with the
per-epoch history. Adam and cross-entropy by default; per-parameter-group learning rates
for fine-tuning; a per-sample transform (the ``augment`` pipeline, the rotation pretext)
applied on the fly to uint8 images before :func:`lifecycle.models.to_model_input`.

Deterministic: batch order comes from a seeded ``DistributedSampler`` and each sample's
random transform from its own seed ``(seed, epoch, index)`` (:func:`runtime.sample_seed`),
so results do not depend on how many loader workers run. Under ``torchrun`` every process
validates (so all keep the same best epoch); only rank 0 shows progress and logs.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from lifecycle.core.images import IMAGENET_MEAN, IMAGENET_STD
from lifecycle.core.progress import progress
from lifecycle.models import to_model_input
from lifecycle.training.runtime import Cluster, sample_seed

SampleTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class Samples:
    """Inputs and labels held in memory: uint8 images (N, 3, H, W) or float features (N, D)."""

    inputs: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_images(cls, images: np.ndarray, labels: np.ndarray) -> "Samples":
        """uint8 (N, H, W, 3) arrays, as the data stages write them, channels first."""
        tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        return cls(tensor, torch.from_numpy(np.asarray(labels, dtype=np.int64)))

    def __len__(self) -> int:
        return len(self.labels)


class _SampleSet(Dataset):
    """Items are ``(epoch, index)`` pairs so each sample's transform has its own seed."""

    def __init__(self, samples: Samples, transform: SampleTransform | None, seed: int) -> None:
        self.samples, self.transform, self.seed = samples, transform, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = item
        x, y = self.samples.inputs[index], self.samples.labels[index]
        if self.transform is None:
            return x, y
        # torchvision's random transforms draw from torch's default CPU generator: seed it
        # for this sample and put its state back (the generator's own calls; torch.manual_seed
        # costs a millisecond).
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(sample_seed(self.seed, epoch, index))
        try:
            return self.transform(x, y)
        finally:
            generator.set_state(state)


class _EpochSampler(Sampler):
    """A ``DistributedSampler`` whose indices carry the epoch along (see :class:`_SampleSet`)."""

    def __init__(self, inner: DistributedSampler) -> None:
        self.inner, self.epoch = inner, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, index) for index in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def image_preparer(mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
    """The batch step for images: uint8 (N, 3, H, W) to the normalised float batch."""
    return lambda batch: to_model_input(batch, mean, std)


def features_preparer():
    """The batch step for precomputed float features: none."""
    return lambda batch: batch


@dataclasses.dataclass(frozen=True)
class FitConfig:
    epochs: int                 # passes over the training samples
    batch_size: int             # samples per optimisation step, over all processes together
    lr: float                   # Adam's learning rate (parameter groups may set their own)
    seed: int                   # batch order and per-sample transforms
    weight_decay: float = 0.0   # Adam's L2 penalty
    workers: int = 0            # loader processes for the per-sample transform (results do not depend on it)
    name: str = "train"         # for progress bars and the log


@dataclasses.dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float


@dataclasses.dataclass
class FitResult:
    best_epoch: int             # 1-based; the same on every process
    history: list[EpochRecord]
    world_size: int

    @property
    def best(self) -> EpochRecord | None:
        return next((r for r in self.history if r.epoch == self.best_epoch), None)

    def summary(self) -> dict[str, Any]:
        """The kept epoch's metrics, keyed as in DVCLive and metrics/*.json."""
        best = self.best
        if best is None:
            return {"best_epoch": 0}
        return {
            "best_epoch": best.epoch,
            "epochs": len(self.history),
            "train": {"loss": best.train_loss, "accuracy": best.train_accuracy},
            "val": {"loss": best.val_loss, "accuracy": best.val_accuracy},
        }


def _logits(output: Any) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output


def predict_logits(
    model: nn.Module,
    inputs: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    desc: str | None = None,
) -> torch.Tensor:
    """Logits (N, classes) on CPU for ``inputs`` in eval mode, batch by batch."""
    module = model.module if hasattr(model, "module") else model
    was_training = module.training
    module.eval()
    chunks = []
    starts = range(0, len(inputs), batch_size)
    if desc:
        starts = progress(starts, desc=desc, total=len(starts))
    with torch.no_grad():
        for start in starts:
            batch = prepare(inputs[start : start + batch_size].to(device))
            chunks.append(_logits(module(batch)).float().cpu())
    module.train(was_training)
    if not chunks:
        return torch.zeros(0, 0)
    return torch.cat(chunks)


def _validate(model, val: Samples, prepare, batch_size, device, loss_fn) -> tuple[float, float]:
    logits = predict_logits(model, val.inputs, prepare, batch_size=max(batch_size, 128), device=device)
    loss = float(loss_fn(logits, val.labels))
    accuracy = float((logits.argmax(1) == val.labels).float().mean())
    return loss, accuracy


def fit(
    model: nn.Module,
    train: Samples,
    val: Samples,
    config: FitConfig,
    *,
    cluster: Cluster | None = None,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    transform: SampleTransform | None = None,
    param_groups: list[dict[str, Any]] | None = None,
    loss_fn: nn.Module | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    """Train ``model`` in place; it ends with the weights of its best validation epoch.

    ``prepare`` turns a batch into model input (default: :func:`image_preparer`);
    ``transform`` changes one (input, label) pair on the fly (augmentation, pretext);
    ``param_groups`` are Adam's groups (each may carry its own ``lr``), default all
    parameters that require gradients at ``config.lr``.
    """
    cluster = cluster or Cluster()
    prepare = prepare or image_preparer()
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    device = cluster.device
    model.to(device)
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    network: nn.Module = model
    if cluster.distributed:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    sampler = _EpochSampler(
        DistributedSampler(
            range(len(train)), num_replicas=cluster.world_size, rank=cluster.rank, shuffle=True, seed=config.seed
        )
    )
    per_process_batch = max(1, -(-config.batch_size // cluster.world_size))
    workers = config.workers if transform is not None else 0
    loader = DataLoader(
        _SampleSet(train, transform, config.seed),
        batch_size=per_process_batch,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )

    history: list[EpochRecord] = []
    best_key: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        network.train()
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
        batches = loader
        if cluster.is_main:
            batches = progress(loader, desc=f"{config.name} epoch {epoch}/{config.epochs}", total=len(loader))
        for inputs, labels in batches:
            inputs = prepare(inputs.to(device, non_blocking=True))
            labels = labels.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            logits = _logits(network(inputs))
            loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                totals += torch.stack(
                    [loss.detach().double() * len(labels), (logits.argmax(1) == labels).sum().double(),
                     torch.tensor(len(labels), dtype=torch.float64, device=device)]
                )
        if cluster.distributed:
            dist.all_reduce(totals)
        train_loss, train_accuracy = (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()
        seconds = time.perf_counter() - started
        if cluster.distributed:
            _broadcast_buffers(model)  # batch-norm statistics differ per process after its last batch
        # Every process validates the same model on the whole split, so all agree on the
        # best epoch and end with the same weights without further messages.
        val_loss, val_accuracy = _validate(model, val, prepare, per_process_batch, device, loss_fn)
        record = EpochRecord(epoch, train_loss, train_accuracy, val_loss, val_accuracy)
        history.append(record)
        key = (val_accuracy, -val_loss)
        improved = best_key is None or key > best_key
        if improved:
            best_key = key
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        if on_epoch is not None:
            on_epoch(record)
        if not cluster.is_main:
            continue
        print(
            f"{config.name} epoch {epoch}/{config.epochs}: train loss {train_loss:.4f} accuracy {train_accuracy:.4f}"
            f" | val loss {val_loss:.4f} accuracy {val_accuracy:.4f} | {totals[2].item() / seconds:.0f} images/s"
            f"{'  (best so far)' if improved else ''}",
            flush=True,
        )
    model.load_state_dict(best_state)
    best_epoch = max(history, key=lambda r: (r.val_accuracy, -r.val_loss, -r.epoch)).epoch
    return FitResult(best_epoch=best_epoch, history=history, world_size=cluster.world_size)


def _broadcast_buffers(model: nn.Module) -> None:
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
