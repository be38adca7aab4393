"""The prediction log: one JSON line per served image, append-only, rotated by size; and the
feedback labels that name what those images really were.

The service appends (:class:`PredictionLog`); the ``monitor`` stage and the feedback lookup
read (:func:`read_log`, :func:`find`). One format, one module, so writer and readers cannot
drift apart. Feedback (``POST /feedback``, or a labelling tool's CSV of ``request_id,label``)
is appended to ``feedback.jsonl`` in the same folder, never rotated; the last label given for
a request counts (:func:`labels`).

Layout, in one folder (``served.log_dir``): ``predictions.jsonl`` is written; when it would
pass ``max_bytes`` it becomes ``predictions.1.jsonl``, the older ones shift up, and at most
``backups`` of them are kept. A request's records never span two files.

Safe under gunicorn's several worker processes and their threads at once: a record is one
``write`` of a whole line to a file opened with ``O_APPEND``, under an exclusive lock on
``.lock`` beside the log (held also while rotating). A worker killed mid-write leaves at worst
one incomplete last line, which :func:`read_log` skips and counts; the next writer starts a
new line (it checks that the file ends with a newline).

Writing never slows or fails a request: :meth:`PredictionLog.submit` hands records to a
background thread through a bounded queue, which writes whatever is waiting in one locked
append. A full queue or a failed write (a disk that refuses) drops the records and counts
them in :attr:`PredictionLog.failures`.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import itertools
import json
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lifecycle.core.images import ImageDecodeError, read_header

IMAGES = "images"  # kept uploads, named by their sha256 (only with SERVE_KEEP_IMAGES)
LOG_NAME = "predictions"
SUFFIX = ".jsonl"
LOCK_NAME = ".lock"
FEEDBACK_FILE = "feedback.jsonl"


STATISTICS = ("brightness", "contrast", "red", "green", "blue")
EMBEDDING_DIMS = 16
_LUMA = np.array([0.299, 0.587, 0.114])


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image of (N, S, S, 3) uint8: mean luma, its standard deviation, and the channel means, in [0, 1].

    Over every second pixel of every second row: a quarter of the work on the service's request
    path, the same numbers to a few thousandths, and the reference is computed the same way.
    """
    pixels = np.asarray(images[:, ::2, ::2], dtype=np.float64).reshape(len(images), -1, 3) / 255.0
    luma = pixels @ _LUMA
    means = pixels.mean(axis=1)
    return {"brightness": luma.mean(axis=1), "contrast": luma.std(axis=1),
            "red": means[:, 0], "green": means[:, 1], "blue": means[:, 2]}


@functools.lru_cache(maxsize=8)
def projection(width: int, dims: int = EMBEDDING_DIMS) -> np.ndarray:
    """The fixed (width, dims) Gaussian projection for embeddings of ``width``: the same in every process.

    Drawn once per width and process (drawing it took most of a request's logging time), read-only.
    """
    generator = np.random.default_rng([0x5EED, width, dims])
    matrix = generator.standard_normal((width, dims)) / np.sqrt(dims)
    matrix.flags.writeable = False
    return matrix


def project(embeddings: np.ndarray, dims: int = EMBEDDING_DIMS) -> np.ndarray:
    """(N, width) penultimate-layer embeddings -> (N, dims) float32."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    return (embeddings @ projection(embeddings.shape[1], dims)).astype(np.float32)



def records(request_id: str, time: str, model: Mapping[str, str], uploads: list[tuple[str, bytes]],
            images: np.ndarray, answers: list[Mapping[str, Any]], embeddings: np.ndarray | None) -> list[dict[str, Any]]:
    """One record per image of a request: who answered, what it was asked, what it said.

    ``images`` are the (N, S, S, 3) arrays the model saw, ``answers`` its per-image answers
    (``label``, ``probabilities``), ``embeddings`` its penultimate-layer embeddings or None.
    The statistics and the projected embedding are what ``monitor`` compares with the
    validation split (:mod:`lifecycle.monitoring`); no pixels are kept here.
    """
    statistics = image_statistics(images)
    projected = project(embeddings) if embeddings is not None else None
    found = []
    for index, ((filename, data), answer) in enumerate(zip(uploads, answers)):
        try:
            width, height, _, image_format = read_header(data)
        except ImageDecodeError:
            width = height = 0
            image_format = "unknown"
        found.append({
            "time": time, "request_id": request_id, "index": index, "filename": filename, "model": dict(model),
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "format": image_format,
            "width": width, "height": height,
            "statistics": {name: round(float(values[index]), 6) for name, values in statistics.items()},
            "embedding": None if projected is None else [round(float(v), 5) for v in projected[index]],
            "label": answer["label"], "probabilities": dict(answer["probabilities"]),
        })
    return found


def log_files(folder: Path) -> list[Path]:
    """The log's files in ``folder``, oldest first: ``predictions.<backups>.jsonl`` ... ``predictions.jsonl``."""
    folder = Path(folder)
    rotated = []
    for path in folder.glob(f"{LOG_NAME}.*{SUFFIX}"):
        number = path.name[len(LOG_NAME) + 1:-len(SUFFIX)]
        if number.isdigit():
            rotated.append((int(number), path))
    current = folder / f"{LOG_NAME}{SUFFIX}"
    return [path for _, path in sorted(rotated, reverse=True)] + ([current] if current.is_file() else [])


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``.lock``, through a descriptor of its own: it excludes the other
    worker processes and this process's other threads alike. (filelock's lock costs ten times as
    much, and this one is taken on every batch the service writes.)"""
    descriptor = os.open(Path(folder) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _lines(records: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n" for record in records).encode()


def append(folder: Path, records: Iterable[Mapping[str, Any]], max_bytes: int, backups: int) -> None:
    """Append ``records`` as JSON lines, rotating whenever the next request's would pass ``max_bytes``. Raises OSError.

    The records of one request (consecutive, one ``request_id``) stay in one file, and a file
    never passes ``max_bytes`` but for one request larger than it, alone in its file.
    """
    folder = Path(folder)
    lines = [_lines(group) for _, group in itertools.groupby(records, key=lambda record: record.get("request_id"))]
    if not lines:
        return
    folder.mkdir(parents=True, exist_ok=True)
    current = folder / f"{LOG_NAME}{SUFFIX}"
    with _locked(folder):
        size = current.stat().st_size if current.exists() else 0
        chunk: list[bytes] = []
        pending = 0
        for line in lines:
            if size + pending + len(line) > max_bytes and (size or chunk):
                if chunk:
                    _append_to(current, b"".join(chunk), size)
                _rotate(folder, backups)
                size, chunk, pending = 0, [], 0
            chunk.append(line)
            pending += len(line)
        _append_to(current, b"".join(chunk), size)


def _append_to(path: Path, data: bytes, size: int) -> None:
    """One write of whole lines; a partial last line (a killed writer's) is ended first."""
    descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if size and not _ends_with_newline(descriptor, size):
            data = b"\n" + data  # a killed writer's partial line stays alone on its line
        os.write(descriptor, data)
    finally:
        os.close(descriptor)


def _ends_with_newline(descriptor: int, size: int) -> bool:
    return os.pread(descriptor, 1, size - 1) == b"\n"


def _rotate(folder: Path, backups: int) -> None:
    """predictions.jsonl -> predictions.1.jsonl -> ... ; the oldest beyond ``backups`` is removed."""
    for number in range(backups, 0, -1):
        older = folder / f"{LOG_NAME}.{number}{SUFFIX}"
        if number == backups:
            older.unlink(missing_ok=True)
        else:
            newer_name = folder / f"{LOG_NAME}.{number + 1}{SUFFIX}"
            if older.exists():
                os.replace(older, newer_name)
    current = folder / f"{LOG_NAME}{SUFFIX}"
    if backups > 0:
        os.replace(current, folder / f"{LOG_NAME}.1{SUFFIX}")
    else:
        current.unlink(missing_ok=True)


def find(folder: Path, request_id: str) -> list[dict[str, Any]]:
    """The records of ``request_id`` (one per image), newest file first; [] if the log has none.

    A byte search per line before any JSON is parsed, so a lookup over the whole kept log
    stays fast. Records rotated away beyond ``backups`` are gone: :func:`oldest_time` says since when.
    """
    needle = json.dumps({"request_id": request_id}, separators=(",", ":"))[1:-1].encode()
    for path in reversed(log_files(folder)):
        found = []
        with open(path, "rb") as handle:
            for line in handle:
                if needle in line:
                    try:
                        found.append(json.loads(line))
                    except ValueError:
                        continue  # a crash's partial line
        if found:
            return found
    return []


def oldest_time(folder: Path) -> str | None:
    """The time of the oldest record still kept, or None for an empty log."""
    for path in log_files(folder):
        with open(path, "rb") as handle:
            for line in handle:
                try:
                    return json.loads(line).get("time")
                except (ValueError, AttributeError):
                    continue
    return None


class LabelRefused(Exception):
    """A label that cannot be recorded: ``status`` 404 (no such request) or 400 (not one of its classes)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def label_request(folder: Path, request_id: str, label: str, source: str, time: str) -> int:
    """Record ``label`` for ``request_id`` after checking both; returns how many images it labels.

    The one rule for ``POST /feedback`` and a labelling tool's CSV: the request must be in the
    kept log (else :class:`LabelRefused` 404, saying whether it was rotated away) and the label
    one of the classes of the model that answered it (else 400).
    """
    found = find(folder, request_id)
    if not found:
        oldest = oldest_time(folder)
        why = (f"its oldest kept record is from {oldest}; older ones were rotated away (SERVE_LOG_BACKUPS)"
               if oldest else "the prediction log is empty")
        raise LabelRefused(f"request_id {request_id!r} is not in the prediction log ({why}).", 404)
    classes = list(found[0].get("probabilities") or {})
    if label not in classes:
        raise LabelRefused(f"label {label!r} is not one of the classes of the model that answered: "
                           f"{', '.join(classes)}.", 400)
    record_label(folder, request_id, label, source, time)
    return len(found)


def record_label(folder: Path, request_id: str, label: str, source: str, time: str) -> None:
    """Append one feedback label (the last one for a request counts). Raises OSError."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FEEDBACK_FILE
    data = _lines([{"request_id": request_id, "label": label, "source": source, "time": time}])
    with _locked(folder):
        _append_to(path, data, path.stat().st_size if path.exists() else 0)


def labels(folder: Path) -> dict[str, str]:
    """request id -> its last label, from ``feedback.jsonl`` (unreadable lines skipped)."""
    found: dict[str, str] = {}
    path = Path(folder) / FEEDBACK_FILE
    if not path.is_file():
        return found
    with open(path, "rb") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                found[str(record["request_id"])] = str(record["label"])
            except (ValueError, KeyError, TypeError):
                continue
    return found


def keep_images(folder: Path, images: Mapping[str, bytes]) -> None:
    """Write each image as ``<folder>/<sha256>`` unless it is there (content-addressed: a rename keeps it whole)."""
    for digest, data in images.items():
        path = Path(folder) / digest
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(data)
        os.replace(partial, path)


class LogRead:
    """What :func:`read_log` found: the records, oldest first, and the lines it could not read."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.unreadable = 0
        self.files: list[Path] = []


def read_log(folder: Path) -> LogRead:
    """Every record of the log in ``folder``, oldest first; unreadable lines (a crash's partial one) are counted."""
    found = LogRead()
    for path in log_files(folder):
        found.files.append(path)
        with open(path, "rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    found.unreadable += 1
                    continue
                if isinstance(record, dict):
                    found.records.append(record)
                else:
                    found.unreadable += 1
    return found


class PredictionLog:
    """The service's writer: a background thread appends what requests submit, never blocking them."""

    def __init__(self, folder: Path, max_bytes: int, backups: int, queue_size: int = 10_000,
                 on_failure: Callable[[int, BaseException | None], None] | None = None) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.backups = backups
        self.failures = 0          # records dropped: a failed write or a full queue
        self._on_failure = on_failure
        self._queue: queue.Queue[tuple[Callable, int] | threading.Event | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, records: list[Mapping[str, Any]], images: Mapping[str, bytes] | None = None) -> None:
        """Queue ``records`` (and ``images``: sha256 -> bytes, to keep) for the log; returns at once."""
        self.submit_later(lambda: (records, dict(images or {})), len(records))

    def submit_later(self, build: Callable[[], tuple[list[Mapping[str, Any]], dict[str, bytes]]], count: int) -> None:
        """Queue ``build`` (returning the records and the images to keep), which the writer's thread calls:
        a request pays only for the queueing. A full queue drops them, counted as ``count`` failures."""
        try:
            self._queue.put_nowait((build, count))
        except queue.Full:
            self._failed(count, None)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is written (or dropped); False on timeout."""
        done = threading.Event()
        self._queue.put(done, timeout=timeout)
        return done.wait(timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        """Write what is queued, everything waiting at once: one lock and one write per batch, not per request."""
        while True:
            batch = [self._queue.get()]
            while len(batch) < 256:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records, images, flushes = [], {}, []
            for item in batch:
                if isinstance(item, threading.Event):
                    flushes.append(item)
                elif item is not None:
                    build, count = item
                    try:
                        built, kept = build()
                    except Exception as error:  # noqa: BLE001 - a record that cannot be made is counted, not raised
                        self._failed(count, error)
                        continue
                    records += built
                    images.update(kept)
            if records:
                try:
                    keep_images(self.folder / IMAGES, images)
                    append(self.folder, records, self.max_bytes, self.backups)
                except Exception as error:  # noqa: BLE001 - a log failure never reaches a request
                    self._failed(len(records), error)
            for flushed in flushes:
                flushed.set()
            if any(item is None for item in batch):
                return

    def _failed(self, count: int, error: BaseException | None) -> None:
        self.failures += count
        if self._on_failure is not None:
            self._on_failure(count, error)
