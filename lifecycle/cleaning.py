"""Preprocess and impute (seed steps 1 and 2): from the raw manifest to clean, labelled rows.

:func:`preprocess` drops duplicate rows, the configured irrelevant columns and duplicate
image content, strips paths, normalises label spelling and checks that every image exists
and decodes (on every core, :mod:`lifecycle.core.parallel`). Every input row is either kept or
listed by name in :attr:`CleaningReport.dropped` (path, reason, detail), one reason per fault:
an empty, truncated or corrupt file, one that is not an image, an unsupported format, an image
over the pixel limit, a duplicate row or image.
:func:`impute` then fills or drops missing labels with scikit-learn's ``SimpleImputer``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from lifecycle.core.folders import SkipTable
from lifecycle.core.images import ImageDecodeError, check_image
from lifecycle.core.parallel import ordered_map
from lifecycle.core.progress import progress
from lifecycle.core.schema import ImputeParams, PreprocessParams


# Every reason preprocess drops a row for (the per-reason plot lists each, zero included):
# the manifest's own faults, then each way an image file can fail (lifecycle.core.images).
DROP_REASONS = ("empty_path", "unknown_label", "duplicate_row", "path_outside_raw", "missing_file",
                "empty_file", "not_an_image", "unsupported_format", "truncated_image", "corrupt_image",
                "over_pixel_limit", "unreadable_image", "duplicate_image")


@dataclasses.dataclass
class CleaningReport:
    rows_in: int
    rows_kept: int
    dropped: SkipTable  # one row per dropped manifest row: path, reason, detail
    columns_dropped: list[str]
    columns_missing: list[str]

    def as_dict(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "rows_dropped": len(self.dropped),
            "dropped_by_reason": self.dropped.counts(DROP_REASONS),
            "columns_dropped": self.columns_dropped,
            "columns_missing": self.columns_missing,
        }


def normalise_label(value: object, classes: list[str], aliases: dict[str, str]) -> str | float:
    """``' DOG '`` -> ``'dog'``; blank -> NaN; anything unknown -> ``'?<value>'``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    text = str(value).strip().lower()
    if not text:
        return np.nan
    text = aliases.get(text, text)
    return text if text in classes else f"?{text}"


def inspect_file(path: Path, root: Path) -> dict | tuple[str, str]:
    """The content hash and header of the image at ``path``, or (reason, detail) to drop its row.

    Reads the file once: the same bytes are hashed and shown to decode (at the cheapest
    scale, :func:`~lifecycle.core.images.check_image`). Each fault has its own reason
    (:attr:`ImageDecodeError.reason <lifecycle.core.images.ImageDecodeError.reason>`).
    """
    path = path.resolve()
    if not path.is_relative_to(root):
        return "path_outside_raw", "resolves outside data/raw"
    if not path.is_file():
        return "missing_file", "no such file"
    try:
        data = path.read_bytes()
    except OSError as error:  # a file we may not read
        return "unreadable_image", error.strerror or str(error)
    try:
        width, height, mode, fmt = check_image(data)
    except ImageDecodeError as error:
        return error.reason, str(error)
    return {"sha256": hashlib.sha256(data).hexdigest(), "width": width, "height": height, "mode": mode, "format": fmt}


def preprocess(raw: pd.DataFrame, raw_dir: Path, params: PreprocessParams) -> tuple[pd.DataFrame, CleaningReport]:
    """Clean ``raw`` (paths relative to ``raw_dir``); return clean rows and the accounting."""
    dropped = SkipTable()
    rows_in = len(raw)
    present = [c for c in params.drop_columns if c in raw.columns]
    missing = [c for c in params.drop_columns if c not in raw.columns]
    frame = raw.drop(columns=present).copy()

    frame["image_path"] = frame["image_path"].astype("string").str.strip()
    no_path = frame["image_path"].isna() | (frame["image_path"] == "")
    for line in frame.index[no_path]:
        dropped.add("", "empty_path", f"row {line + 2} of the raw manifest names no image")
    frame = frame[~no_path]
    raw_labels = frame["label"]
    frame["label"] = [normalise_label(v, params.classes, params.label_aliases) for v in frame["label"]]
    unknown = frame["label"].astype("string").str.startswith("?").fillna(False).astype(bool)
    for path, label in zip(frame["image_path"][unknown], raw_labels[unknown]):
        dropped.add(path, "unknown_label", f"label {str(label).strip()!r} is not one of {params.classes}")
    frame = frame[~unknown]

    repeated = frame.duplicated()
    for path in frame["image_path"][repeated]:
        dropped.add(path, "duplicate_row", "the same row as an earlier one")
    frame = frame[~repeated]

    root = raw_dir.resolve()
    rows = frame.to_dict("records")
    inspected = ordered_map(lambda row: inspect_file(raw_dir / row["image_path"], root), rows)
    records = []
    for row, found in progress(zip(rows, inspected), desc="preprocess: checking images", total=len(rows)):
        if isinstance(found, tuple):
            dropped.add(row["image_path"], *found)
        else:
            records.append({**row, **found})

    clean = pd.DataFrame(records, columns=[*frame.columns, "sha256", "width", "height", "mode", "format"])
    # Keep one row per image content, preferring a row that carries a label.
    clean["_unlabelled"] = clean["label"].isna()
    clean = clean.sort_values(["_unlabelled"], kind="stable")
    copies = clean.duplicated(subset="sha256", keep="first")
    first_path = dict(zip(clean["sha256"][~copies], clean["image_path"][~copies]))
    for path, sha256 in zip(clean["image_path"][copies], clean["sha256"][copies]):
        dropped.add(path, "duplicate_image", f"the same bytes as {first_path[sha256]}")
    clean = clean[~copies].sort_index().drop(columns="_unlabelled")

    report = CleaningReport(rows_in, len(clean), dropped, present, missing)
    assert report.rows_kept + len(dropped) == rows_in, "every row must be accounted for"
    return clean.reset_index(drop=True), report


def impute(clean: pd.DataFrame, params: ImputeParams) -> tuple[pd.DataFrame, dict]:
    """Fill or drop missing labels; return the rows and a report of what changed."""
    missing = clean["label"].isna()
    report = {
        "strategy": params.label_strategy,
        "rows_in": len(clean),
        "labels_missing": int(missing.sum()),
        "labels_imputed": 0,
        "rows_dropped": 0,
    }
    imputed = clean.copy()
    if params.label_strategy == "drop":
        imputed = imputed[~missing]
        report["rows_dropped"] = int(missing.sum())
    elif missing.any():
        from sklearn.impute import SimpleImputer  # here: preprocess imports this module too (1 s of import)

        imputer = SimpleImputer(strategy="most_frequent", missing_values=np.nan)
        labels = np.array([v if isinstance(v, str) else np.nan for v in imputed["label"]], dtype=object)
        imputed["label"] = imputer.fit_transform(labels.reshape(-1, 1)).ravel()
        report["labels_imputed"] = int(missing.sum())
        report["imputed_value"] = str(imputer.statistics_[0])
    report["rows_out"] = len(imputed)
    report["class_counts"] = {str(k): int(v) for k, v in imputed["label"].value_counts().sort_index().items()}
    return imputed.reset_index(drop=True), report
