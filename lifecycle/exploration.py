"""Exploratory analysis (seed step 6): the numbers behind the eda figures.

Label counts at three points (as ingested, with every spelling variant and blank; after
cleaning and imputation; after synthesis), the raw image sizes and modes, and the
per-class mean image. The summary goes to ``reports/eda.json``, committed, so a change in
the data shows up in review (``git diff``) as well as in the figures; it is not a metrics
file, so ``dvc exp show`` does not grow a column per image mode, format or class.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def raw_labels(raw: pd.DataFrame) -> pd.DataFrame:
    """Labels exactly as written in the raw manifest; blanks shown as ``<missing>``."""
    shown = raw["label"].map(lambda v: repr(v) if isinstance(v, str) and v != v.strip() else v)
    return pd.DataFrame({"label": shown.fillna("<missing>").astype(str)})


def balanced_labels(labels: np.ndarray, synthetic: np.ndarray, classes: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "label": [classes[i] for i in labels],
            "kind": np.where(synthetic, "synthetic", "real"),
        }
    )


def size_summary(clean: pd.DataFrame) -> dict:
    """Width/height statistics and mode counts of the decodable raw images."""
    summary = {}
    for column in ("width", "height"):
        values = clean[column].astype(int)
        summary[column] = {
            "min": int(values.min()),
            "median": float(values.median()),
            "max": int(values.max()),
        }
    summary["modes"] = {str(k): int(v) for k, v in clean["mode"].value_counts().sort_index().items()}
    summary["formats"] = {str(k): int(v) for k, v in clean["format"].value_counts().sort_index().items()}
    return summary


def class_mean_images(images: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, np.ndarray]:
    return {name: images[labels == code].mean(axis=0) for code, name in enumerate(classes) if (labels == code).any()}


def spelling_summary(raw_labels_frame: pd.DataFrame) -> tuple[dict[str, int], pd.DataFrame]:
    """Numbers for reports/eda.json, and the full table of raw spellings with their counts.

    The spellings themselves (``' dog'``, ``<missing>``) are not metric names: they go to a
    table, and the summary says how many rows, spellings and blanks there were.
    """
    table = raw_labels_frame["label"].value_counts().sort_index().rename_axis("label").reset_index(name="rows")
    summary = {
        "rows": int(len(raw_labels_frame)),
        "distinct_spellings": int((table["label"] != "<missing>").sum()),
        "missing": int(table.loc[table["label"] == "<missing>", "rows"].sum()),
    }
    return summary, table


def counts(frame: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame["label"].value_counts().sort_index().items()}


def pick_samples(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices of ``count`` samples, alternating over the classes, real and synthetic mixed as in the data."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    chosen = [i for group in zip(*per_class) for i in group][:count]
    return np.array(chosen, dtype=np.int64)

