"""Preprocess (seed step 1): drop duplicates and irrelevant columns, normalise paths and
label spelling, drop rows whose image is missing or unreadable, and account for every row.

in: data/raw   out: data/interim/clean.csv, metrics/preprocess.json (rows in, kept, dropped),
plots/preprocess/dropped_by_reason.csv (the dropped rows, per reason),
reports/preprocess_dropped.csv (every dropped row: path, reason, detail)   params: preprocess.*
"""
from __future__ import annotations

from lifecycle.cleaning import preprocess
from lifecycle.core import paths
from lifecycle.core.errors import UserError, run_stage
from lifecycle.core.io import write_counts_atomic, write_csv_atomic, write_json_atomic
from lifecycle.core.params import load_params
from lifecycle.manifest import read_raw_manifest


def main() -> None:
    params = load_params().preprocess
    clean, report = preprocess(read_raw_manifest(), paths.RAW, params)
    if clean.empty:
        raise UserError(f"preprocess kept no row of {paths.relative(paths.RAW_MANIFEST)}: {report.dropped.counts()}.")
    write_csv_atomic(clean, paths.CLEAN_MANIFEST)
    write_csv_atomic(report.dropped.table(), paths.PREPROCESS_DROPPED)
    summary = report.as_dict()
    write_counts_atomic(summary.pop("dropped_by_reason"), paths.stage_plots("preprocess") / "dropped_by_reason.csv",
                        key="reason", value="rows")
    write_json_atomic(summary, paths.METRICS / "preprocess.json")
    dropped = {reason: count for reason, count in report.dropped.counts().items() if count}
    print(f"preprocess: kept {report.rows_kept} of {report.rows_in} rows; dropped {dropped}, "
          f"listed in {paths.relative(paths.PREPROCESS_DROPPED)}")


if __name__ == "__main__":
    run_stage(main)
