"""A user's folder is read only inside itself: the one rule for every folder a user names.

ingest (kaggle, imagefolder and csv layouts) and predict read a folder the user gives. A link
inside it may lead anywhere (``cat.1.jpg -> /etc/passwd``), and what ingest reads lands in
data/raw, in the DVC cache and, on ``dvc push``, on the team's remote. So every path is
resolved, and one whose real path leaves the folder is refused, never opened, and accounted
for by name (:class:`Skip`: path, reason, detail):

- :func:`walk` lists the files under a folder. A link to a file inside is kept (by its real
  path); a link that leads out is refused (``outside_folder``); a link to a folder is never
  followed, and counted (``linked_folder``); a folder named like a file the caller wants
  (``dog.5.jpg/``) is not descended into (``folder_named_like_a_file``); anything but a
  regular file (a FIFO, a socket, a device) is refused (``not_a_regular_file``).
- :func:`locate` applies the same rule to one path a manifest or a command line names
  (:func:`relative_name` writes it relative to the folder).
- :func:`copy_file` opens the real path with ``O_NOFOLLOW`` and checks it is a regular file
  before reading a byte, so a file swapped for a link (or a FIFO) after the listing is
  refused, not followed (and never blocks).

Not covered: a hard link is a regular file inside the folder, and is read as one; it cannot
be told from the original without a policy on link counts.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import stat
from collections import Counter
from collections.abc import Collection, Iterable
from pathlib import Path

import pandas as pd

OUTSIDE_FOLDER = "outside_folder"
LINKED_FOLDER = "linked_folder"
FOLDER_NAMED_LIKE_A_FILE = "folder_named_like_a_file"
NOT_A_REGULAR_FILE = "not_a_regular_file"
MISSING_FILE = "missing_file"

SKIP_COLUMNS = ["path", "reason", "detail"]


@dataclasses.dataclass(frozen=True, order=True)
class Found:
    """A regular file under the folder: its path as the user sees it, and its real path."""

    relative: str  # posix, relative to the folder
    real: Path     # resolved; inside the folder's real path


@dataclasses.dataclass(frozen=True, order=True)
class Skip:
    """A file (or folder, or manifest row) not used: one row of a per-file table."""

    path: str
    reason: str
    detail: str = ""


class SkipTable:
    """The skips of one stage, in the order found: the per-file table and its counts agree by construction."""

    def __init__(self, skips: Iterable[Skip] = ()) -> None:
        self.rows: list[Skip] = list(skips)

    def add(self, path: str, reason: str, detail: str = "") -> None:
        self.rows.append(Skip(path, reason, detail))

    def extend(self, skips: Iterable[Skip]) -> None:
        self.rows.extend(skips)

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self, known: Iterable[str] = ()) -> dict[str, int]:
        """Skips per reason, sorted; every ``known`` reason listed, zero when it did not occur."""
        counted = Counter({reason: 0 for reason in known})
        counted.update(skip.reason for skip in self.rows)
        return dict(sorted(counted.items()))

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([dataclasses.astuple(skip) for skip in self.rows], columns=SKIP_COLUMNS)


def walk(root: Path, named_like_files: Collection[str] = ()) -> tuple[list[Found], list[Skip]]:
    """Every regular file under ``root`` that stays inside it, and every entry refused, both sorted.

    ``named_like_files``: lower-case suffixes (``.jpg``) of the files the caller wants; a
    folder with such a name is refused rather than descended into.
    """
    real_root = root.resolve()
    found: list[Found] = []
    skipped: list[Skip] = []
    pending = [real_root]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                path = Path(entry.path)
                relative = path.relative_to(real_root).as_posix()
                if entry.is_symlink():
                    outcome = _follow_link(path, relative, real_root)
                    (found if isinstance(outcome, Found) else skipped).append(outcome)
                elif entry.is_dir(follow_symlinks=False):
                    if path.suffix.lower() in named_like_files:
                        skipped.append(Skip(relative, FOLDER_NAMED_LIKE_A_FILE, "a folder, not a file; not read"))
                    else:
                        pending.append(path)
                elif entry.is_file(follow_symlinks=False):
                    found.append(Found(relative, path))
                else:
                    skipped.append(Skip(relative, NOT_A_REGULAR_FILE, _kind(path)))
    return sorted(found), sorted(skipped)


def locate(root: Path, name: str) -> Found | Skip:
    """The file ``name`` (relative to ``root``, or absolute) if its real path is a regular file inside ``root``."""
    real_root = root.resolve()
    given = Path(name).expanduser()
    real = (given if given.is_absolute() else real_root / given).resolve()
    if not real.is_relative_to(real_root):
        return Skip(name, OUTSIDE_FOLDER, "resolves outside the folder; not read")
    relative = relative_name(root, name)
    if not real.exists():
        return Skip(name, MISSING_FILE, "no such file")
    if not real.is_file():
        return Skip(name, NOT_A_REGULAR_FILE, _kind(real))
    return Found(relative, real)


def relative_name(root: Path, name: str) -> str:
    """``name`` as a tidy path relative to ``root`` (``a/../b.jpg`` -> ``b.jpg``), for a manifest.

    The name the user gave, not where a link inside the folder leads; only where that name
    cannot be written relative to ``root`` is the real path used. Call it only on a name that
    :func:`locate` did not find outside the folder.
    """
    given = Path(os.path.normpath(Path(name).expanduser()))
    if given.is_absolute():
        for base in (root, root.resolve()):
            if given.is_relative_to(base):
                return given.relative_to(base).as_posix()
    elif given.parts[:1] != ("..",):
        return given.as_posix()
    real_root = root.resolve()
    return (real_root / given).resolve().relative_to(real_root).as_posix()


def copy_file(source: Path, target: Path) -> None:
    """Copy the regular file ``source`` (a real path, not a link) to ``target``.

    Raises :class:`OSError` when ``source`` is, by now, a link (``O_NOFOLLOW``) or not a
    regular file; nothing is written then.
    """
    try:
        descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "became a link after it was listed", str(source)) from None
        raise
    with os.fdopen(descriptor, "rb") as reader:
        if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(source))
        with open(target, "wb") as writer:
            shutil.copyfileobj(reader, writer)


def _follow_link(path: Path, relative: str, real_root: Path) -> Found | Skip:
    target = path.resolve()
    if not target.is_relative_to(real_root):
        return Skip(relative, OUTSIDE_FOLDER, "a link that leads outside the folder; not followed")
    if not target.exists():
        return Skip(relative, MISSING_FILE, "a link to nothing")
    if target.is_dir():
        return Skip(relative, LINKED_FOLDER,
                    f"a link to the folder '{target.relative_to(real_root).as_posix() or '.'}'; not followed")
    if not target.is_file():
        return Skip(relative, NOT_A_REGULAR_FILE, _kind(target))
    return Found(relative, target)


def _kind(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except OSError:
        return "cannot be read"
    for test, word in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return f"{word}, not a regular file"
    return "not a regular file"
