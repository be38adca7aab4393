"""Impute (seed step 2): fill or drop missing labels with scikit-learn's SimpleImputer.

in: data/interim/clean.csv   out: data/interim/imputed.csv, metrics/impute.json   params: impute.*
"""
from __future__ import annotations

from lifecycle.cleaning import impute
from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import write_csv_atomic, write_json_atomic
from lifecycle.core.params import load_params
from lifecycle.manifest import read_manifest


def main() -> None:
    params = load_params().impute
    imputed, report = impute(read_manifest(paths.CLEAN_MANIFEST), params)
    write_csv_atomic(imputed, paths.IMPUTED_MANIFEST)
    write_json_atomic(report, paths.METRICS / "impute.json")
    print(f"impute ({params.label_strategy}): {report['labels_missing']} labels missing, "
          f"{report['labels_imputed']} imputed, {report['rows_dropped']} rows dropped")


if __name__ == "__main__":
    run_stage(main)
