"""Impute (seed step 2): fill or drop missing labels with scikit-learn's SimpleImputer.

in: data/interim/clean.csv   out: data/interim/imputed.csv, metrics/impute.json   params: impute.*
"""
from __future__ import annotations

import pandas as pd

from lifecycle import paths
from lifecycle.cleaning import ImputeParams, impute
from lifecycle.errors import UserError, run_stage
from lifecycle.io import write_csv_atomic, write_json_atomic
from lifecycle.params import load_params


def read_manifest(path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{paths.relative(path)} does not exist; run the stage that writes it first (dvc repro).")
    return pd.read_csv(path, dtype={"image_path": str, "label": str}, keep_default_na=False, na_values=[""])


def main() -> None:
    params = load_params("impute", ImputeParams)
    imputed, report = impute(read_manifest(paths.CLEAN_MANIFEST), params)
    write_csv_atomic(imputed, paths.IMPUTED_MANIFEST)
    write_json_atomic(report, paths.METRICS / "impute.json")
    print(f"impute ({params.label_strategy}): {report['labels_missing']} labels missing, "
          f"{report['labels_imputed']} imputed, {report['rows_dropped']} rows dropped")


if __name__ == "__main__":
    run_stage(main)
