"""Predict (batch inference): classify every image under a folder with a :class:`~lifecycle.inference.Predictor`.

in: a folder (``predict.input``) and a predictor. out: one row per image (path, prediction,
label, probability per class), one row per skipped file with the reason, and counts for
``metrics/predict.json`` (and ``plots/predict/class_counts.csv``, the images per label). Unreadable files are skipped and reported; anything that resolves
outside the folder (a symlink that escapes it, a ``..`` path) is refused, never opened.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.core import paths
from lifecycle.core.errors import UserError
from lifecycle.core.images import ImageDecodeError
from lifecycle.core.parallel import ordered_map
from lifecycle.core.progress import progress
from lifecycle.core.schema import PredictParams
from lifecycle.inference import Predictor


@dataclasses.dataclass
class FolderPrediction:
    predictions: pd.DataFrame   # path, prediction, label, probability_<class>...
    skipped: pd.DataFrame       # path, reason
    report: dict[str, Any]      # counts: files, predicted, skipped, and images per label


def resolve_folder(text: str, key: str = "predict.input") -> Path:
    """The folder ``text`` (relative to the repository root unless absolute); it must exist."""
    folder = Path(text).expanduser()
    folder = folder if folder.is_absolute() else paths.ROOT / folder
    if not folder.exists():
        raise UserError(f"{key}: folder '{text}' does not exist.")
    if not folder.is_dir():
        raise UserError(f"{key}: '{text}' is not a folder.")
    return folder


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def list_images(root: Path, only: Sequence[str] | None = None) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """Files to classify under ``root`` as (relative posix path, real path), and refused ones as (path, reason).

    Every file is resolved (symlinks followed) and must land inside ``root``; symlinked
    folders are not followed. ``only`` restricts the run to paths relative to ``root``; one
    that points outside ``root`` (``..``, absolute, or through a symlink) is a UserError.
    """
    real_root = root.resolve()
    accepted: list[tuple[str, Path]] = []
    refused: list[tuple[str, str]] = []
    if only:
        for name in only:
            target = (root / name).resolve()
            if Path(name).is_absolute() or not _inside(target, real_root):
                raise UserError(f"refusing '{name}': it is outside the input folder '{paths.relative(root)}'.")
            tidy = Path(os.path.normpath(name)).as_posix()
            if not target.is_file():
                refused.append((tidy, "does not exist or is not a file"))
            else:
                accepted.append((tidy, target))
        return sorted(accepted), sorted(refused)
    for directory, folders, files in os.walk(root, followlinks=False):
        here = Path(directory)
        for folder in list(folders):
            if (here / folder).is_symlink():
                relative_name = (here / folder).relative_to(root).as_posix()
                escapes = not _inside((here / folder).resolve(), real_root)
                refused.append((relative_name, "refused: symlink to a folder outside the input folder" if escapes
                                else "symlinked folder not followed"))
        folders[:] = sorted(f for f in folders if not (here / f).is_symlink())
        for name in sorted(files):
            path = here / name
            relative_name = path.relative_to(root).as_posix()
            target = path.resolve()
            if not _inside(target, real_root):
                refused.append((relative_name, "refused: symlink to a file outside the input folder"))
            elif not target.is_file():
                refused.append((relative_name, "not a regular file"))
            else:
                accepted.append((relative_name, target))
    return sorted(accepted), sorted(refused)


# Files are decoded (on every core) a chunk at a time, and the chunk classified before the
# next is decoded: decoding and torch never compete for the cores, and at most this many
# decoded images wait in memory.
DECODE_CHUNK = 1024


def decode_in_chunks(predictor: Predictor, files: Sequence[Path], max_pixels: int) -> Iterator[np.ndarray | ImageDecodeError]:
    """Each file's model input, or the error that made it unreadable, in order."""
    def decode(path: Path) -> np.ndarray | ImageDecodeError:
        try:
            return predictor.preprocess(path, max_pixels=max_pixels)
        except ImageDecodeError as error:
            return error

    for start in range(0, len(files), DECODE_CHUNK):
        yield from list(ordered_map(decode, files[start:start + DECODE_CHUNK]))


def predict_folder(predictor: Predictor, root: Path, params: PredictParams,
                   only: Sequence[str] | None = None) -> FolderPrediction:
    """Classify every image under ``root``; unreadable and refused files go to ``skipped``."""
    files, refused = list_images(root, only)
    skipped = list(refused)
    rows: list[dict[str, Any]] = []
    names: list[str] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        for name, probabilities in zip(names, predictor.predict(np.stack(batch))):
            answer = predictor.describe(probabilities)
            row = {"path": name, "prediction": answer["prediction"], "label": answer["label"]}
            row.update({f"probability_{c}": p for c, p in answer["probabilities"].items()})
            rows.append(row)
        names.clear()
        batch.clear()

    decoded = decode_in_chunks(predictor, [path for _, path in files], params.max_pixels)
    for (name, _), image in progress(zip(files, decoded), desc="predict: classifying images", total=len(files)):
        if isinstance(image, ImageDecodeError):
            skipped.append((name, str(image)))
            continue
        batch.append(image)
        names.append(name)
        if len(batch) == params.batch_size:
            flush()
    if batch:
        flush()
    columns = ["path", "prediction", "label"] + [f"probability_{c}" for c in predictor.classes]
    predictions = pd.DataFrame(rows, columns=columns)
    skipped_frame = pd.DataFrame(sorted(skipped), columns=["path", "reason"])
    counts = predictions["label"].value_counts()
    report = {
        "files": len(files) + len(refused),
        "predicted": len(predictions),
        "skipped": len(skipped_frame),
        "labels": {name: int(counts.get(name, 0)) for name in predictor.classes},
    }
    return FolderPrediction(predictions, skipped_frame, report)
