"""The one training loop: train, pretrain, finetune and transfer all call :func:`fit`.

In: a model, training and validation :class:`Samples` (uint8 images, or precomputed
features), a :class:`FitConfig`. Out: the model holding the weights of its best epoch by
validation accuracy (ties: lower validation loss), and a :class:`FitResult` with the
per-epoch history. Adam and cross-entropy by default; per-parameter-group learning rates
for fine-tuning; a batch transform (the ``augment`` pipeline, the rotation pretext) applied
on the fly to whole uint8 batches on the training device before
:func:`lifecycle.models.to_model_input`.

The samples are already in memory, so there is no DataLoader: the training samples are
moved to the device once, each batch is gathered there, transformed there, and fed.
Deterministic: batch order comes from a seeded ``DistributedSampler``, and each batch's
random draws from its own CPU generator seeded by ``(seed, epoch, rank, batch)``
(:func:`runtime.batch_seed`), so they are the same on CPU and CUDA and do not depend on
torch's global generator. Under ``torchrun`` every process validates (so all keep the same
best epoch); only rank 0 shows progress and logs.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from lifecycle.core import numerics
from lifecycle.core.progress import progress
from lifecycle.models import image_preparer, predict_logits
from lifecycle.training.runtime import Cluster, batch_seed

if TYPE_CHECKING:  # the loop runs without pydantic (benchmarks/training_throughput.py needs only torch)
    from lifecycle.core.schema import FitSection

# (uint8 images (N, 3, H, W) and labels (N,) on the training device, a CPU generator for the
# batch's random draws) -> (images, labels): augmentation, the rotation pretext
BatchTransform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


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


class _Batches:
    """One epoch's batches: gathered from the samples on the device, transformed with the
    batch's own generator, prepared. The next batch is made on a second thread while the
    model trains on this one (PyTorch ops release the GIL), so on a CPU the augmentation's
    small ops fill the gaps of the training step's, and on CUDA their launches overlap.
    Every batch depends only on (seed, epoch, rank, batch number), so results do not
    depend on the timing of the two threads."""

    def __init__(self, samples: Samples, size: int, transform: BatchTransform | None,
                 prepare: Callable[[torch.Tensor], torch.Tensor], seed: int, rank: int) -> None:
        self.samples, self.size, self.transform, self.prepare = samples, size, transform, prepare
        self.seed, self.rank = seed, rank

    def count(self, order: torch.Tensor) -> int:
        return -(-len(order) // self.size)

    def make(self, epoch: int, order: torch.Tensor, number: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = order[number * self.size : (number + 1) * self.size]
        inputs, labels = self.samples.inputs[index], self.samples.labels[index]
        if self.transform is not None:
            draws = torch.Generator().manual_seed(batch_seed(self.seed, epoch, self.rank, number))
            inputs, labels = self.transform(inputs, labels, draws)
        return self.prepare(inputs), labels

    def epoch(self, epoch: int, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        total = self.count(order)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches") as ahead:
            coming = ahead.submit(self.make, epoch, order, 0) if total else None
            for number in range(total):
                batch = coming.result()
                if number + 1 < total:
                    coming = ahead.submit(self.make, epoch, order, number + 1)
                yield batch


def _in_layout(prepare: Callable[[torch.Tensor], torch.Tensor], layout: torch.memory_format):
    """``prepare``, then image batches (4-D) in the model's memory layout."""
    if layout == torch.contiguous_format:
        return prepare

    def prepared(batch: torch.Tensor) -> torch.Tensor:
        ready = prepare(batch)
        return ready.contiguous(memory_format=layout) if ready.ndim == 4 else ready

    return prepared


def features_preparer():
    """The batch step for precomputed float features: none."""
    return lambda batch: batch


@dataclasses.dataclass(frozen=True)
class FitConfig:
    epochs: int                 # passes over the training samples
    batch_size: int             # samples per optimisation step, over all processes together
    lr: float                   # Adam's learning rate (parameter groups may set their own)
    seed: int                   # batch order and the batch transform's random draws
    weight_decay: float = 0.0   # Adam's L2 penalty
    name: str = "train"         # for progress bars and the log

    @classmethod
    def of(cls, section: FitSection, lr: float, seed: int, name: str) -> "FitConfig":
        """The fit that a stage's own params section describes (pretrain, finetune, transfer)."""
        return cls(epochs=section.epochs, batch_size=section.batch_size, lr=lr, seed=seed,
                   weight_decay=section.weight_decay, name=name)


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


def _validate(model, val: Samples, prepare, batch_size, device, loss_fn) -> tuple[float, float]:
    model.eval()
    logits = predict_logits(model, val.inputs, prepare, batch_size=max(batch_size, 128), device=device)
    model.train()
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
    transform: BatchTransform | None = None,
    param_groups: list[dict[str, Any]] | None = None,
    loss_fn: nn.Module | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    """Train ``model`` in place; it ends with the weights of its best validation epoch.

    ``prepare`` turns a batch into model input (default: :func:`image_preparer`);
    ``transform`` changes each batch of uint8 images and labels on the device, drawing from
    the batch's own generator (augmentation, the rotation pretext);
    ``param_groups`` are Adam's groups (each may carry its own ``lr``), default all
    parameters that require gradients at ``config.lr``.
    """
    cluster = cluster or Cluster()
    prepare = prepare or image_preparer()
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    device = cluster.device
    # On a CPU, convolutions run about 1.2-1.5x faster with channels last (oneDNN's own
    # layout; measured on the seed CNN and resnet18); CUDA keeps the layout its
    # determinism was checked with. Saved weights are contiguous either way (save_model).
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    model.to(device=device, memory_format=layout)
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    # portable numerics: Adam's fused kernel (the default foreach one calls MKL's vendor-dispatched sqrt)
    numerics.check_torch()
    optimizer = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay, **numerics.adam_options())
    network: nn.Module = model
    if cluster.distributed:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    sampler = DistributedSampler(
        range(len(train)), num_replicas=cluster.world_size, rank=cluster.rank, shuffle=True, seed=config.seed
    )
    per_process_batch = max(1, -(-config.batch_size // cluster.world_size))
    # Moved once: every batch is then gathered, transformed and fed where the model is.
    batches = _Batches(Samples(train.inputs.to(device), train.labels.to(device)), per_process_batch, transform,
                       _in_layout(prepare, layout), config.seed, cluster.rank)

    history: list[EpochRecord] = []
    best_key: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.int64, device=device)
        network.train()
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
        epoch_batches = batches.epoch(epoch, order)
        if cluster.is_main:
            epoch_batches = progress(epoch_batches, desc=f"{config.name} epoch {epoch}/{config.epochs}",
                                     total=batches.count(order))
        for inputs, labels in epoch_batches:
            optimizer.zero_grad(set_to_none=True)
            logits = network(inputs)
            loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                count = torch.ones((), dtype=torch.float64, device=device).mul_(len(labels))
                totals += torch.stack([loss.detach().double() * len(labels),
                                       (logits.argmax(1) == labels).sum().double(), count])
        if cluster.distributed:
            dist.all_reduce(totals)
        train_loss, train_accuracy = (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()
        seconds = time.perf_counter() - started
        if cluster.distributed:
            _broadcast_buffers(model)  # batch-norm statistics differ per process after its last batch
        # Every process validates the same model on the whole split, so all agree on the
        # best epoch and end with the same weights without further messages.
        val_loss, val_accuracy = _validate(model, val, _in_layout(prepare, layout), per_process_batch, device, loss_fn)
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
