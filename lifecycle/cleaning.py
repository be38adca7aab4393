"""Preprocess and impute (seed steps 1 and 2): from the raw manifest to clean, labelled rows.

:func:`preprocess` drops duplicate rows, the configured irrelevant columns and duplicate
image content, strips paths, normalises label spelling and checks that every image exists
and decodes (on every core, :mod:`lifecycle.core.parallel`); every input row is either kept or counted under the reason it was dropped.
:func:`impute` then fills or drops missing labels with scikit-learn's ``SimpleImputer``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from lifecycle.core.images import ImageDecodeError, check_image
from lifecycle.core.parallel import ordered_map
from lifecycle.core.progress import progress
from lifecycle.core.schema import ImputeParams, PreprocessParams


@dataclasses.dataclass
class CleaningReport:
    rows_in: int
    rows_kept: int
    dropped: Counter
    columns_dropped: list[str]
    columns_missing: list[str]

    def as_dict(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "rows_dropped": sum(self.dropped.values()),
            "dropped_by_reason": dict(sorted(self.dropped.items())),
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


def inspect_file(path: Path, root: Path) -> dict | str:
    """The content hash and header of the image at ``path``, or the reason to drop its row.

    Reads the file once: the same bytes are hashed and shown to decode (at the cheapest
    scale, :func:`~lifecycle.core.images.check_image`).
    """
    path = path.resolve()
    if not path.is_relative_to(root):
        return "path_outside_raw"
    if not path.is_file():
        return "missing_file"
    try:
        data = path.read_bytes()
        width, height, mode, fmt = check_image(data)
    except (OSError, ImageDecodeError):  # OSError: a file we may not read
        return "unreadable_image"
    return {"sha256": hashlib.sha256(data).hexdigest(), "width": width, "height": height, "mode": mode, "format": fmt}


def preprocess(raw: pd.DataFrame, raw_dir: Path, params: PreprocessParams) -> tuple[pd.DataFrame, CleaningReport]:
    """Clean ``raw`` (paths relative to ``raw_dir``); return clean rows and the accounting."""
    dropped: Counter = Counter()
    rows_in = len(raw)
    present = [c for c in params.drop_columns if c in raw.columns]
    missing = [c for c in params.drop_columns if c not in raw.columns]
    frame = raw.drop(columns=present).copy()

    frame["image_path"] = frame["image_path"].astype("string").str.strip()
    no_path = frame["image_path"].isna() | (frame["image_path"] == "")
    dropped["empty_path"] += int(no_path.sum())
    frame = frame[~no_path]
    frame["label"] = [normalise_label(v, params.classes, params.label_aliases) for v in frame["label"]]
    unknown = frame["label"].astype("string").str.startswith("?").fillna(False).astype(bool)
    dropped["unknown_label"] += int(unknown.sum())
    frame = frame[~unknown]

    before = len(frame)
    frame = frame.drop_duplicates()
    dropped["duplicate_row"] += before - len(frame)

    root = raw_dir.resolve()
    rows = frame.to_dict("records")
    inspected = ordered_map(lambda row: inspect_file(raw_dir / row["image_path"], root), rows)
    records = []
    for row, found in progress(zip(rows, inspected), desc="preprocess: checking images", total=len(rows)):
        if isinstance(found, str):
            dropped[found] += 1
        else:
            records.append({**row, **found})

    clean = pd.DataFrame(records, columns=[*frame.columns, "sha256", "width", "height", "mode", "format"])
    # Keep one row per image content, preferring a row that carries a label.
    clean["_unlabelled"] = clean["label"].isna()
    clean = clean.sort_values(["_unlabelled"], kind="stable")
    before = len(clean)
    clean = clean.drop_duplicates(subset="sha256", keep="first").sort_index().drop(columns="_unlabelled")
    dropped["duplicate_image"] += before - len(clean)

    report = CleaningReport(rows_in, len(clean), dropped, present, missing)
    assert report.rows_kept + sum(dropped.values()) == rows_in, "every row must be accounted for"
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
