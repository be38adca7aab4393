"""The spool: every mirror is first written here, then sent, so a tracking failure loses nothing.

``.mlflow-spool/`` at the real repository root holds one complete entry per pipeline state
and store (``entry.json`` and a copy of the state's files), written beside the spool and
renamed into place. An entry leaves the spool only once it was sent; a lock keeps two
mirrors (queued experiments) from sending the same entry at once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import filelock

from lifecycle.core import paths
from lifecycle.core.errors import UserError
from tracking.provenance import real_root
from tracking.snapshot import is_mirrored, mirrored_files, pipeline_state

LOCK_WAIT_S = 300.0       # how long a mirror waits for another one (queued experiments) to finish sending


def spool_dir(root: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    return real_root(root, environ) / paths.MLFLOW_SPOOL


@dataclasses.dataclass(frozen=True)
class SpoolEntry:
    """One pipeline state waiting to be sent: ``entry.json`` and a copy of its files."""

    folder: Path

    @property
    def files(self) -> Path:
        return self.folder / "files"

    @property
    def record(self) -> dict[str, Any]:
        return json.loads((self.folder / "entry.json").read_text())


def spool_entries(spool: Path) -> list[SpoolEntry]:
    """Complete entries, oldest first."""
    if not spool.is_dir():
        return []
    entries = [
        SpoolEntry(path)
        for path in spool.iterdir()
        if (path / "entry.json").is_file() and not path.name.startswith(".")
    ]
    return sorted(entries, key=lambda entry: (entry.record.get("spooled_at", 0), entry.folder.name))


@contextlib.contextmanager
def spool_lock(spool: Path, wait_s: float) -> Iterator[bool]:
    """Hold the spool's lock (True), or give up after ``wait_s`` seconds (False)."""
    spool.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(spool / ".lock")
    try:
        lock.acquire(timeout=wait_s, poll_interval=0.2)
    except filelock.Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def spool_state(
    spool: Path, fill: Any, tags: Mapping[str, str], uri: str, experiment: str, move_alias: bool
) -> SpoolEntry:
    """Write one entry: ``fill(folder)`` copies the state's files into ``folder``.

    Written beside the spool and renamed into place, so an entry is complete or absent; a
    newer entry of the same state for the same store replaces the older one.
    """
    spool.mkdir(parents=True, exist_ok=True)
    incoming = spool / f".incoming-{uuid.uuid4().hex}"
    try:
        (incoming / "files").mkdir(parents=True)
        fill(incoming / "files")
        state = pipeline_state(incoming / "files")
        record = {
            "state": state,
            "tracking_uri": uri,
            "experiment": experiment,
            "tags": dict(tags),
            "move_alias": move_alias,
            "spooled_at": time.time(),
        }
        (incoming / "entry.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        target = spool / f"{state[:16]}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"
        if target.exists():
            trash = spool / f".trash-{uuid.uuid4().hex}"
            os.replace(target, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(incoming, target)
        return SpoolEntry(target)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def copy_workspace(root: Path) -> Any:
    """A ``fill`` for :func:`spool_state` that copies the state of the folder ``root``."""

    def fill(destination: Path) -> None:
        for name in mirrored_files(root):
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(root) / name, target)

    return fill


def copy_revision(root: Path, commit: str) -> Any:
    """A ``fill`` that reads the state of a git commit (git and DVC-tracked files) via DVC."""

    def fill(destination: Path) -> None:
        from dvc.api import DVCFileSystem

        fs = DVCFileSystem(str(root), rev=commit)
        names = [name for name in paths.MIRRORED_FILES if fs.isfile(name)]
        for folder in paths.MIRRORED_FOLDERS:
            if fs.isdir(folder):
                names += [name.lstrip("/") for name in fs.find(folder)]
        for name in names:
            if not is_mirrored(name):
                continue
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                fs.get_file(name, str(target))
            except Exception as error:  # not in the DVC cache, remote unreachable, ...
                raise UserError(
                    f"cannot read {name} of revision {commit[:12]} ({type(error).__name__}); "
                    f"fetch it first, e.g. dvc fetch --rev {commit[:12]} (or dvc exp pull)."
                ) from None

    return fill
