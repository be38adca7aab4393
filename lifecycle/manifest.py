"""The image manifests between the data stages: one row per image, ``image_path`` and ``label``.

``data/raw/animal_dataset.csv`` is what ingest wrote (every column as text, untouched);
``data/interim/clean.csv`` and ``imputed.csv`` are what preprocess and impute made of it.
Blank cells read as missing, and nothing else does (a label ``NA`` stays a label).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from lifecycle.core import paths
from lifecycle.core.errors import UserError


def read_raw_manifest(path: Path = paths.RAW_MANIFEST) -> pd.DataFrame:
    """The raw manifest, every column as text; it must have ``image_path`` and ``label``."""
    if not path.is_file():
        raise UserError(f"{paths.relative(path)} does not exist; run the ingest stage first.")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    for column in ("image_path", "label"):
        if column not in raw.columns:
            raise UserError(f"{paths.relative(path)} has no '{column}' column.")
    return raw


def read_manifest(path: Path) -> pd.DataFrame:
    """A manifest a data stage wrote (clean.csv, imputed.csv)."""
    if not path.is_file():
        raise UserError(f"{paths.relative(path)} does not exist; run the stage that writes it first (dvc repro).")
    return pd.read_csv(path, dtype={"image_path": str, "label": str}, keep_default_na=False, na_values=[""])
