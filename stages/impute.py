"""Impute (seed step 2): fill or drop missing labels with scikit-learn's SimpleImputer.

in: data/interim/clean.csv   out: data/interim/imputed.csv, metrics/impute.json (rows out, labels
missing and imputed), plots/impute/class_counts.csv (images per class)   params: impute.*
"""
from __future__ import annotations

from lifecycle.cleaning import impute
from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import write_counts_atomic, write_csv_atomic, write_json_atomic
from lifecycle.core.params import load_params
from lifecycle.manifest import read_manifest


def main() -> None:
    params = load_params().impute
    imputed, report = impute(read_manifest(paths.CLEAN_MANIFEST), params)
    write_csv_atomic(imputed, paths.IMPUTED_MANIFEST)
    write_counts_atomic(report["class_counts"], paths.stage_plots("impute") / "class_counts.csv")
    # rows_in is preprocess's rows_kept, rows_dropped their difference, strategy a param: kept
    # out of the metrics, so `dvc exp show` has one column per fact.
    headline = ("rows_out", "labels_missing", "labels_imputed", "imputed_value")
    write_json_atomic({key: report[key] for key in headline if key in report}, paths.METRICS / "impute.json")
    print(f"impute ({params.label_strategy}): {report['labels_missing']} labels missing, "
          f"{report['labels_imputed']} imputed, {report['rows_dropped']} rows dropped")


if __name__ == "__main__":
    run_stage(main)
