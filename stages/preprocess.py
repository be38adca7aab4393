"""Preprocess (seed step 1): drop duplicates and irrelevant columns, normalise paths and
label spelling, drop rows whose image is missing or unreadable, and account for every row.

in: data/raw   out: data/interim/clean.csv, metrics/preprocess.json   params: preprocess.*
"""
from __future__ import annotations

import pandas as pd

from lifecycle import paths
from lifecycle.cleaning import PreprocessParams, preprocess
from lifecycle.errors import UserError, run_stage
from lifecycle.io import write_csv_atomic, write_json_atomic
from lifecycle.params import load_params


def read_raw_manifest() -> pd.DataFrame:
    if not paths.RAW_MANIFEST.is_file():
        raise UserError(f"{paths.relative(paths.RAW_MANIFEST)} does not exist; run the ingest stage first.")
    raw = pd.read_csv(paths.RAW_MANIFEST, dtype=str, keep_default_na=False, na_values=[""])
    for column in ("image_path", "label"):
        if column not in raw.columns:
            raise UserError(f"{paths.relative(paths.RAW_MANIFEST)} has no '{column}' column.")
    return raw


def main() -> None:
    params = load_params("preprocess", PreprocessParams)
    clean, report = preprocess(read_raw_manifest(), paths.RAW, params)
    if clean.empty:
        raise UserError(f"preprocess kept no row of {paths.relative(paths.RAW_MANIFEST)}: {report.as_dict()['dropped_by_reason']}.")
    write_csv_atomic(clean, paths.CLEAN_MANIFEST)
    write_json_atomic(report.as_dict(), paths.METRICS / "preprocess.json")
    print(f"preprocess: kept {report.rows_kept} of {report.rows_in} rows; dropped {dict(report.dropped)}")


if __name__ == "__main__":
    run_stage(main)
