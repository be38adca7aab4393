"""Ingest (lifecycle step 0): bring the raw images and their manifest into data/raw.

in: nothing (synthetic) or ``ingest.path``   out: data/raw, metrics/ingest.json
params: seed, ingest.*
The default draws the embedded synthetic dataset; a user's own Kaggle folder, ImageFolder
tree or CSV manifest is copied in instead, so the raw data is DVC-versioned and never edited.
"""
from __future__ import annotations

from pathlib import Path

from lifecycle import paths
from lifecycle.errors import run_stage
from lifecycle.io import atomic_dir, write_csv_atomic, write_json_atomic
from lifecycle.params import GlobalParams, load_params
from lifecycle.sources import IngestParams, IngestResult, from_csv, from_imagefolder, from_kaggle
from lifecycle.synthetic import generate


def ingest(params: IngestParams, seed: int, out_dir: Path) -> IngestResult:
    """Fill ``out_dir`` with ``images/`` from the configured source; return its manifest."""
    source = Path(params.path).expanduser() if params.path else None
    if source is not None and not source.is_absolute():
        source = paths.ROOT / source
    if params.source == "synthetic":
        return IngestResult(generate(params.synthetic, seed, out_dir))
    if params.source == "kaggle":
        return from_kaggle(source, out_dir)
    if params.source == "imagefolder":
        return from_imagefolder(source, out_dir)
    return from_csv(source, out_dir, params.path_column, params.label_column)


def main() -> None:
    params = load_params("ingest", IngestParams)
    seed = load_params(None, GlobalParams).seed
    with atomic_dir(paths.RAW) as staging:
        result = ingest(params, seed, staging)
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
