"""Where training runs: the process group under ``torchrun``, the device, and the seeds.

:func:`distributed` yields a :class:`Cluster` (rank, world size, device): CUDA when there
is one (a GPU per local rank, nccl), else CPU (gloo); one process when not started by
``torchrun``. :func:`seed_everything` makes a run reproducible: seeded generators and
``torch.use_deterministic_algorithms(True)`` (:func:`deterministic` alone where nothing is
drawn at random); :func:`batch_seed` gives each batch of each process its own random draws
per epoch, on a CPU generator, so whatever device trains.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist

# cuBLAS needs this before its first call to be deterministic (harmless on CPU).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@contextlib.contextmanager
def distributed() -> Iterator[Cluster]:
    """The process group when started by ``torchrun`` (WORLD_SIZE > 1), else one process.

    CUDA when available (one GPU per local rank, nccl), CPU otherwise (gloo).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        started = True
    else:
        started = False
    try:
        yield Cluster(rank=rank, world_size=world_size, device=device)
    finally:
        if started:
            dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed torch's generators and refuse non-deterministic kernels."""
    torch.manual_seed(seed)
    deterministic()


def deterministic() -> None:
    """Refuse non-deterministic kernels: a computation that draws nothing random needs no seed, only this."""
    torch.use_deterministic_algorithms(True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False


def batch_seed(seed: int, epoch: int, rank: int, batch: int) -> int:
    """The seed of one batch's random draws (augmentation, pretext) in one epoch on one process."""
    return int(np.random.SeedSequence([seed, epoch, rank, batch]).generate_state(1, dtype=np.uint64)[0] >> 1)
