"""What the four training stages share: fit under ``torchrun`` or alone, log, save on rank 0.

``train``, ``finetune``, ``pretrain`` and ``transfer`` differ in the model they build and the
samples they feed; the rest is here, once::

    with fit_stage("train") as stage:                 # process group, device, DVCLive log (rank 0)
        model = stage.seeded(lambda: build_model(spec))
        stage.fit_and_save(model, train, val, config, spec, paths.model_dir("train"), info=...)

On success the DVCLive folder (``metrics/<stage>/``) is moved into place with the kept
epoch's metrics; on any failure it is discarded, so the committed curves stay as they were.
Only rank 0 logs, saves and prints; every process ends at a barrier, so none exits while
another still writes.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lifecycle.core import paths
from lifecycle.core.io import read_arrays, read_json
from lifecycle.models import ModelSpec, image_preparer, save_model
from lifecycle.training.log import EpochLog
from lifecycle.training.loop import BatchTransform, FitConfig, FitResult, Samples, fit
from lifecycle.training.runtime import Cluster, distributed, seed_everything


def read_samples(path: Path) -> Samples:
    """A split's images and labels, as the data stages write them (``data/processed/*.npz``)."""
    arrays = read_arrays(path)
    return Samples.from_images(arrays["images"], arrays["labels"])


def classifier_spec(architecture: str, **fields: Any) -> ModelSpec:
    """A model of ``architecture`` for the dataset's classes and image size (``data/processed/classes.json``)."""
    classes = read_json(paths.CLASSES)
    return ModelSpec(architecture=architecture, classes=list(classes["classes"]), image_size=int(classes["image_size"]),
                     **fields)


@dataclasses.dataclass
class FitStage:
    name: str                     # the stage: progress bars, the log folder, the sidecar's info.stage
    cluster: Cluster
    log: EpochLog | None          # rank 0 only
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)  # written as metrics/<stage>/metrics.json

    def seeded(self, build: Callable[[], nn.Module], seed: int) -> nn.Module:
        """``build()`` right after seeding, so initial weights depend on ``seed`` alone."""
        seed_everything(seed)
        return build()

    def log_under(self, prefix: str) -> None:
        """Log the next fit's curves under ``prefix`` in the stage's DVCLive folder (rank 0; pretrain: per architecture)."""
        if self.log is not None:
            self.log.start(prefix)

    def report(self, summary: dict[str, Any]) -> None:
        """What ``metrics/<stage>/metrics.json`` holds when the stage ends, instead of the last fit's summary."""
        self.summary = summary

    def fit_and_save(
        self,
        model: nn.Module,
        train: Samples,
        val: Samples,
        config: FitConfig,
        spec: ModelSpec,
        folder: Path | None,
        *,
        info: dict[str, Any],
        prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
        transform: BatchTransform | None = None,
        param_groups: list[dict[str, Any]] | None = None,
        saved: Callable[[nn.Module], nn.Module] | None = None,
    ) -> FitResult:
        """Fit ``model``; rank 0 saves ``saved(model)`` (default: the model) with ``spec`` and its provenance.

        The sidecar's ``info`` is ``{"stage", kept epoch's metrics, "world_size", **info}``
        (and ``numerics``, which :func:`lifecycle.models.save_model` adds to every sidecar).
        """
        result = fit(model, train, val, config, cluster=self.cluster, prepare=prepare, transform=transform,
                     param_groups=param_groups,
                     on_epoch=self.log.log if self.log is not None else None)
        self.summary = result.summary()
        if self.cluster.is_main and folder is not None:
            info = {"stage": self.name, **self.summary, "world_size": result.world_size, **info}
            save_model(saved(model) if saved else model, dataclasses.replace(spec, info=info), folder)
            print(f"{config.name}: kept epoch {self.summary['best_epoch']} "
                  f"(val accuracy {self.summary['val']['accuracy']:.4f})")
        return result

    def fit_classifier(self, model: nn.Module, config: FitConfig, spec: ModelSpec, *, info: dict[str, Any],
                       transform: BatchTransform | None = None,
                       param_groups: list[dict[str, Any]] | None = None) -> FitResult:
        """Fit an image classifier on the balanced training split, kept by ``val``; saved to ``models/<stage>``."""
        return self.fit_and_save(model, read_samples(paths.TRAIN_BALANCED), read_samples(paths.VAL), config, spec,
                                 paths.model_dir(self.name), info=info, prepare=image_preparer(spec.mean, spec.std),
                                 transform=transform, param_groups=param_groups)


@contextlib.contextmanager
def fit_stage(name: str, log_dir: Path | None = None) -> Iterator[FitStage]:
    """The process group (under ``torchrun``) or one process, with rank 0's DVCLive log."""
    with distributed() as cluster:
        log = EpochLog(log_dir or paths.live_dir(name)) if cluster.is_main else None
        stage = FitStage(name, cluster, log)
        try:
            yield stage
        except BaseException:
            if log is not None:
                log.discard()
            raise
        if log is not None:
            log.close(stage.summary)
        if cluster.distributed:
            dist.barrier()
