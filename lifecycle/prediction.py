"""Predict (batch inference): classify every image under a folder with a :class:`~lifecycle.inference.Predictor`.

in: a folder (``predict.input``) and a predictor. out: one row per image (path, prediction,
label, probability per class), one row per skipped file (path, reason, detail), and counts for
``metrics/predict.json`` (and ``plots/predict/class_counts.csv``, the images per label).
Unreadable files are skipped with the fault's reason (``truncated_image``, ``not_an_image``, ...);
the folder is read only inside itself (:mod:`lifecycle.core.folders`): a link that leads out of
it is refused, never opened.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.core import paths
from lifecycle.core.errors import UserError
from lifecycle.core.folders import OUTSIDE_FOLDER, Found, Skip, SkipTable, locate, walk
from lifecycle.core.images import ImageDecodeError
from lifecycle.core.parallel import ordered_map
from lifecycle.core.progress import progress
from lifecycle.core.schema import PredictParams
from lifecycle.inference import Predictor


@dataclasses.dataclass
class FolderPrediction:
    predictions: pd.DataFrame   # path, prediction, label, probability_<class>...
    skipped: pd.DataFrame       # path, reason, detail
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


def list_images(root: Path, only: Sequence[str] | None = None) -> tuple[list[Found], list[Skip]]:
    """The files to classify under ``root``, and the refused ones, by :mod:`lifecycle.core.folders`' one rule.

    A file whose real path leaves ``root`` is refused, never opened; links to folders are not
    followed. ``only`` restricts the run to paths relative to ``root``; one that points outside
    ``root`` (``..``, absolute, or through a link) is a UserError.
    """
    if not only:
        return walk(root)
    accepted: list[Found] = []
    refused: list[Skip] = []
    for name in only:
        place = locate(root, name)
        if Path(name).is_absolute() or (isinstance(place, Skip) and place.reason == OUTSIDE_FOLDER):
            raise UserError(f"refusing '{name}': it is outside the input folder '{paths.relative(root)}'.")
        (accepted if isinstance(place, Found) else refused).append(place)
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
    skipped = SkipTable(refused)
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

    decoded = decode_in_chunks(predictor, [file.real for file in files], params.max_pixels)
    for file, image in progress(zip(files, decoded), desc="predict: classifying images", total=len(files)):
        if isinstance(image, ImageDecodeError):
            skipped.add(file.relative, image.reason, str(image))
            continue
        batch.append(image)
        names.append(file.relative)
        if len(batch) == params.batch_size:
            flush()
    if batch:
        flush()
    columns = ["path", "prediction", "label"] + [f"probability_{c}" for c in predictor.classes]
    predictions = pd.DataFrame(rows, columns=columns)
    skipped_frame = skipped.table()
    counts = predictions["label"].value_counts()
    report = {
        "files": len(files) + len(refused),
        "predicted": len(predictions),
        "skipped": len(skipped_frame),
        "labels": {name: int(counts.get(name, 0)) for name in predictor.classes},
    }
    return FolderPrediction(predictions, skipped_frame, report)
