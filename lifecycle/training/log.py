"""Per-epoch metrics into a DVCLive folder, drawn by ``dvc plots show`` and committed to git.

DVCLive writes into a temporary folder beside the destination (``metrics/.train.<random>.tmpdir``),
which :meth:`EpochLog.close` moves into place in one step. A stage killed mid-training
therefore never leaves a half-written ``metrics.json`` or ``.tsv`` curve in git's view: the
committed files stay as they were, and the next run removes the stale temporary folder.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lifecycle.core.io import promote_dir, staging_dir
from lifecycle.training.loop import EpochRecord


class EpochLog:
    """Per-epoch metrics into a DVCLive folder (rank 0 only), drawn by ``dvc plots show``.

    DVCLive writes ``<dir>/metrics.json`` (here: the kept epoch's metrics) and
    ``<dir>/plots/metrics/{train,val}/{loss,accuracy}.tsv``. It is kept from touching git or
    DVC: no experiment of its own, no dvc.yaml, no report, and it is not told that a
    DVC pipeline runs it (inside ``dvc exp run`` it would otherwise ``git add`` files).
    """

    _DVC_VARIABLES = ("DVC_ROOT", "DVC_EXP_BASELINE_REV", "DVC_EXP_NAME")

    def __init__(self, folder: Path, prefix: str = "") -> None:
        from dvclive import Live

        self.folder = Path(folder)
        self.staging = staging_dir(self.folder)
        saved = {name: os.environ.pop(name) for name in self._DVC_VARIABLES if name in os.environ}
        try:
            self.live = Live(dir=str(self.staging), save_dvc_exp=False, dvcyaml=None, report=None, monitor_system=False)
        finally:
            os.environ.update(saved)
        self.prefix = prefix

    def start(self, prefix: str) -> None:
        """Begin a new series (one per backbone when a stage trains several)."""
        self.prefix = prefix
        self.live.step = 0

    def log(self, record: EpochRecord) -> None:
        self.live.step = record.epoch
        for split in ("train", "val"):
            for metric in ("loss", "accuracy"):
                self.live.log_metric(f"{self.prefix}{split}/{metric}", getattr(record, f"{split}_{metric}"))
        self.live.make_summary()

    def close(self, summary: dict[str, Any]) -> None:
        """Write ``summary`` (the kept epoch's metrics, not the last epoch's) as metrics.json,
        then move the whole folder into place."""
        self.live.summary = dict(summary)
        self.live.step = int(summary.get("best_epoch", 0))  # DVCLive adds "step": the kept epoch
        self.live.make_summary()
        (self.staging / "plots").mkdir(exist_ok=True)  # declared in dvc.yaml even when nothing trained
        promote_dir(self.staging, self.folder)

    def discard(self) -> None:
        """Drop what was logged (a failed run): the committed folder stays as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)


