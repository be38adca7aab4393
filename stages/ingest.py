"""Ingest (lifecycle step 0): bring the raw images and their manifest into data/raw.

in: nothing (synthetic) or ``ingest.path``
out: data/raw, metrics/ingest.json (rows, files skipped), plots/ingest/skipped_by_reason.csv,
reports/ingest_skipped.csv (every file not ingested: path, reason, detail)
params: seed, ingest.*
The default draws the embedded synthetic dataset; a user's own Kaggle folder, ImageFolder
tree or CSV manifest is copied in instead, so the raw data is DVC-versioned and never edited.
Nothing outside that folder is read (lifecycle/core/folders.py); what is refused is listed by name.
"""
from __future__ import annotations

from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import atomic_dir, write_counts_atomic, write_csv_atomic, write_json_atomic
from lifecycle.core.params import load_params
from lifecycle.sources import SKIP_REASONS, ingest


def main() -> None:
    pipeline = load_params()
    params = pipeline.ingest
    with atomic_dir(paths.RAW) as staging:
        result = ingest(params, pipeline.seed, staging, pipeline.served)
        write_csv_atomic(result.manifest, staging / paths.RAW_MANIFEST.name)
    write_csv_atomic(result.skipped.table(), paths.INGEST_SKIPPED)
    write_counts_atomic(result.skipped.counts(SKIP_REASONS), paths.stage_plots("ingest") / "skipped_by_reason.csv",
                        key="reason", value="files")
    write_json_atomic({"source": params.source, "rows": len(result.manifest), "served": result.served,
                       "files_skipped": len(result.skipped)},
                      paths.METRICS / "ingest.json")
    print(f"ingest: {len(result.manifest)} rows from source '{params.source}' -> {paths.relative(paths.RAW)}"
          + (f"; {len(result.skipped)} files skipped, listed in {paths.relative(paths.INGEST_SKIPPED)}"
             if len(result.skipped) else ""))


if __name__ == "__main__":
    run_stage(main)
