"""Atomic, deterministic writers and their readers.

Every output is written to a temporary file or folder beside its destination and moved
into place with ``os.replace``, so an interrupted stage never leaves a half-written file for
DVC to cache or for git to see. Writers are byte-deterministic (sorted JSON keys, fixed zip timestamps) so that the
same inputs give the same hashes in ``dvc.lock``.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.core.errors import UserError
from lifecycle.core.paths import CLASSES, relative

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


# Temporary names: ``.<name>.<random>.tmp`` (files) and ``.<name>.<random>.tmpdir`` (folders),
# beside their destination. .gitignore and .dvcignore ignore both patterns, so a stage killed
# mid-write leaves git status clean and nothing DVC would hash into an output; the next
# write of the same destination removes what a killed run left.
TEMP_FILE_SUFFIX = ".tmp"
TEMP_DIR_SUFFIX = ".tmpdir"


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files and folders an interrupted write of ``path`` left beside it."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for suffix in (TEMP_FILE_SUFFIX, TEMP_DIR_SUFFIX):
        for stale in path.parent.glob(f".{glob_escape(path.name)}.*{suffix}"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_FILE_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def staging_dir(path: Path) -> Path:
    """A fresh temporary folder beside the folder ``path``, for :func:`promote_dir` to move into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_DIR_SUFFIX, dir=path.parent))


def promote_dir(staging: Path, path: Path) -> None:
    """Replace the folder ``path`` with ``staging`` (two renames; the old folder is then removed)."""
    path = Path(path)
    os.chmod(staging, 0o755)
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_DIR_SUFFIX, dir=path.parent))
        os.replace(path, old / path.name)
        os.replace(staging, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, path)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder that replaces the folder ``path`` on success."""
    staging = staging_dir(path)
    try:
        yield staging
        promote_dir(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_bytes_atomic(data: bytes, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars and arrays (and nested containers of them) to plain JSON."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float):
        return round(value, 6)
    return value


def write_json_atomic(payload: Mapping[str, Any], path: Path) -> None:
    text = json.dumps(to_jsonable(payload), indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(text.encode(), path)


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{relative(path)} does not exist; run the stage that writes it first (dvc repro).")
    return json.loads(path.read_text())


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    write_bytes_atomic(frame.to_csv(index=False, lineterminator="\n").encode(), path)


def write_counts_atomic(counts: Mapping[str, int], path: Path, key: str = "class", value: str = "images") -> None:
    """``{"cat": 939, "dog": 394}`` as a two-column CSV (``class,images``), in the given order:
    the per-class or per-reason counts a DVC bar chart draws (``template: bar_horizontal``),
    kept out of the metrics files so that ``dvc exp show`` is not one column per class."""
    write_csv_atomic(pd.DataFrame({key: [str(name) for name in counts], value: [int(n) for n in counts.values()]}), path)


def write_arrays_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays as an ``.npz`` that ``np.load`` reads, with fixed timestamps.

    ``np.savez`` stamps each member with the current time, which would change the file's
    hash on every run; this writer stamps 1980-01-01 so identical arrays give identical bytes.
    """
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name in sorted(arrays):
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
                info.external_attr = 0o644 << 16
                archive.writestr(info, buffer.getvalue())


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{relative(path)} does not exist; run the stage that writes it first (dvc repro).")
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def read_labelled(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """A data stage's arrays, and the class names their ``labels`` index (``data/processed/classes.json``)."""
    return read_arrays(path), read_json(CLASSES)["classes"]


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (hex), read in blocks, so a large file never sits in memory whole."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
