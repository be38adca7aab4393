"""Ingest (lifecycle step 0): bring the raw images and their manifest into data/raw.

in: nothing (synthetic) or ``ingest.path``   out: data/raw, metrics/ingest.json
params: seed, ingest.*
The default draws the embedded synthetic dataset; a user's own Kaggle folder, ImageFolder
tree or CSV manifest is copied in instead, so the raw data is DVC-versioned and never edited.
"""
from __future__ import annotations

from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import atomic_dir, write_csv_atomic, write_json_atomic
from lifecycle.core.params import load_params
from lifecycle.sources import ingest


def main() -> None:
    pipeline = load_params()
    params = pipeline.ingest
    with atomic_dir(paths.RAW) as staging:
        result = ingest(params, pipeline.seed, staging)
        write_csv_atomic(result.manifest, staging / paths.RAW_MANIFEST.name)
    write_json_atomic(
        {
            "source": params.source,
            "rows": len(result.manifest),
            "files_skipped": sum(result.skipped.values()),
            "skipped_by_reason": dict(sorted(result.skipped.items())),
        },
        paths.METRICS / "ingest.json",
    )
    print(f"ingest: {len(result.manifest)} rows from source '{params.source}' -> {paths.relative(paths.RAW)}")


if __name__ == "__main__":
    run_stage(main)
