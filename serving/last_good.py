"""The last model that loaded, kept where the service owns it, so a new worker can fall back to it.

in: ``SERVE_LAST_GOOD`` (set by gunicorn's master to a private folder it creates at start,
inside ``SERVE_STATE_DIR`` or the system's temporary folder, and removes when it stops).
out: :class:`LastGood`, used by :mod:`serving.model_source`: :meth:`LastGood.load_copy` loads a
model folder through a private copy and publishes the copy once it loaded; and
:func:`load_folder` / :func:`load_failure`, which name the file at fault when a model does not load.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lifecycle.core.errors import UserError
from lifecycle.models import SIDECAR_FILE, WEIGHTS_FILE, ModelSpec

VARIABLE = "SERVE_LAST_GOOD"    # the private folder's path, set by gunicorn's master for its workers
STATE_DIR = "SERVE_STATE_DIR"   # where the master creates it (default: the system's temporary folder)
POINTER = "last-good.json"
COPIES = "models"
KEEP = 2                        # published copies kept besides the one the pointer names

log = logging.getLogger(__name__)
Loaded = TypeVar("Loaded")


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

    def load_copy(self, folder: Path, shown: str, load: Callable[[Path], Loaded],
                  record: Callable[[Loaded], dict[str, Any]]) -> Loaded:
        """``load`` a private copy of the model ``folder``; once it loaded, publish the copy with ``record(loaded)``.

        ``shown`` names the model in errors. With no room for the copy the folder itself is
        loaded, without a fallback copy (logged); what did not load is never kept.
        """
        try:
            staged = self.stage(folder)
        except FileNotFoundError:
            raise UserError(f"{shown}: {WEIGHTS_FILE} or {SIDECAR_FILE} disappeared while being read.") from None
        except OSError as error:
            log.warning("could not keep a copy of %s in %s: %s", shown, self.folder, error)
            return load(folder)
        try:
            loaded = load(staged)
            self.publish(staged, record(loaded))
            staged = None
            return loaded
        finally:
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)

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


def load_folder(load: Callable[[str], Loaded], folder: Path, shown: str) -> Loaded:
    """Load a model folder, naming the file at fault: the sidecar is checked first, then the weights."""
    try:
        ModelSpec.from_dict(json.loads((folder / SIDECAR_FILE).read_text()))
    except Exception as error:
        raise UserError(f"{shown}/{SIDECAR_FILE} is not a readable model sidecar: {first_line(error)}.") from None
    try:
        return load(str(folder))
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"{shown}/{WEIGHTS_FILE} could not be loaded: {first_line(error)}.") from None


def load_failure(shown: str, error: Exception) -> str:
    """One sentence: which model (file) did not load, and the loader's first line of why."""
    if isinstance(error, UserError):
        return str(error)
    return f"{shown} could not be loaded: {first_line(error)}."


def first_line(error: BaseException) -> str:
    """The error's first sentence (torch's explain at length, and suggest weights_only=False: not that)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    first = text.splitlines()[0].split(". ")[0].rstrip(".")
    return first if len(first) <= 300 else first[:297] + "..."
