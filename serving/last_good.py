"""The last model that loaded, kept where the service owns it, so a new worker can fall back to it.

in: ``SERVE_LAST_GOOD`` (set by gunicorn's master to a private folder it creates at start,
inside ``SERVE_STATE_DIR`` or the system's temporary folder, and removes when it stops).
out: :class:`LastGood`, used by :mod:`serving.model_source`.

Why this design. Each gunicorn worker loads the model itself, after the fork
(``preload_app = False``), so that a graceful reload (HUP) loads the model chosen now and
the watcher can swap models per worker. But a worker that starts while ``models/best`` is
corrupt (after HUP, a killed worker's replacement, ``max_requests`` recycling) had nothing
to fall back to: it failed to boot and gunicorn stopped the whole service. Loading in the
master instead would mean torch and the model in the master (forked into threads that do
not survive a fork) and a master that can still only load what is on disk. So:

- A worker never loads a model folder in place: it copies ``model.pt`` and ``model.json``
  into a new folder here, loads that copy (``torch.load(weights_only=True)``, as always),
  and only when it loaded publishes it as the last good model: a pointer file
  (``last-good.json``: which folder, which model, why) replaced atomically (``os.replace``).
  What is published is exactly the bytes that loaded, never a file that changed since.
- A worker whose model fails to load (at boot, or in a reload) keeps or takes the last good
  model instead, and says so (``/health``: ``degraded``, with the reason); with none (a
  service that never loaded a model), it starts anyway and answers 503 until a good one
  appears (the watcher, or HUP).
- The folder is the service's own: created fresh by the master (mode 0700), so a new
  service never serves a model some earlier run left behind; the master removes it on exit
  (a master killed with SIGKILL leaves it behind in the temporary folder).

Published copies are never changed; the two newest (and the one the pointer names) are kept,
older ones are removed. MLflow models (registry versions, ``runs:/``) are not copied here:
they are immutable and downloaded per load; only model folders can be replaced under the
service.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from lifecycle.models import SIDECAR_FILE, WEIGHTS_FILE

VARIABLE = "SERVE_LAST_GOOD"    # the private folder's path, set by gunicorn's master for its workers
STATE_DIR = "SERVE_STATE_DIR"   # where the master creates it (default: the system's temporary folder)
POINTER = "last-good.json"
COPIES = "models"
KEEP = 2                        # published copies kept besides the one the pointer names

log = logging.getLogger(__name__)


def create_private_folder() -> Path:
    """A fresh folder for one service (mode 0700), in ``SERVE_STATE_DIR`` or the temporary folder."""
    parent = os.environ.get(STATE_DIR) or None
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="serve-last-good-", dir=parent))


class LastGood:
    """The last model folder that loaded in any worker of one service: staged copies and a pointer."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.copies = self.folder / COPIES
        self.pointer = self.folder / POINTER

    @classmethod
    def from_environment(cls) -> "LastGood | None":
        """The folder ``SERVE_LAST_GOOD`` names, when it exists (under gunicorn); else None (one process)."""
        value = os.environ.get(VARIABLE, "")
        return cls(Path(value)) if value and Path(value).is_dir() else None

    def stage(self, model_folder: Path) -> Path:
        """A private copy of the model folder's two files, to be loaded and then published or discarded."""
        self.copies.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.copies))
        try:
            for name in (WEIGHTS_FILE, SIDECAR_FILE):
                shutil.copyfile(Path(model_folder) / name, staged / name)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return staged

    def publish(self, staged: Path, record: dict[str, Any]) -> None:
        """Make the staged copy (which loaded) the last good model; ``record`` says which and why."""
        final = self.copies / f"model-{uuid.uuid4().hex[:12]}"
        os.replace(staged, final)
        body = {"folder": final.name, "loaded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"), "pid": os.getpid(), **record}
        fd, tmp = tempfile.mkstemp(prefix=f".{POINTER}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(body, handle)
            os.replace(tmp, self.pointer)
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._prune(keep=final.name)

    def read(self) -> tuple[Path, dict[str, Any]] | None:
        """(the copy's folder, its record) of the last good model, or None when there is none."""
        try:
            record = json.loads(self.pointer.read_text())
            folder = self.copies / record["folder"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("ignored %s: %s", self.pointer, error)
            return None
        return (folder, record) if folder.is_dir() else None

    def _prune(self, keep: str) -> None:
        try:
            named = json.loads(self.pointer.read_text()).get("folder")
            published = sorted((p for p in self.copies.glob("model-*") if p.name not in (keep, named)),
                               key=lambda p: p.stat().st_mtime, reverse=True)
        except (OSError, ValueError, AttributeError):
            return
        for old in published[max(0, KEEP - 1):]:
            shutil.rmtree(old, ignore_errors=True)
