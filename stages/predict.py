"""Predict (batch inference): classify every image under a folder with the selected model.

Unreadable files are skipped and listed with the reason; files that resolve outside the
folder (a link escaping it) are refused, never opened (lifecycle/core/folders.py, the rule
ingest follows too).

in: models/best, the folder predict.input (default data/raw/images)
out: data/predictions/predictions.csv (path, prediction, label, probability_<class>...),
     data/predictions/skipped.csv (path, reason, detail), metrics/predict.json (files, predicted, skipped),
     plots/predict/class_counts.csv (images predicted per class)
params: predict.*

Outside DVC: ``python -m stages.predict [--input DIR] [--model DIR] [--output DIR] [FILE ...]``
classifies another folder, model or only the given files (relative to the folder; ``..``
and absolute paths are refused). Such a run needs --output: the CSVs go there and metrics and
plots are not written, so the pipeline's outputs (pinned by dvc.lock) stay as DVC wrote them.
(OpenMP's passive waiting, which keeps a busy machine from stalling the forward passes, is set
by importing the ``lifecycle`` package, before torch loads.)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lifecycle.core import paths
from lifecycle.core.errors import UserError, run_stage
from lifecycle.core.io import write_counts_atomic, write_csv_atomic, write_json_atomic
from lifecycle.core.params import load_params
from lifecycle.inference import load_predictor
from lifecycle.prediction import predict_folder, resolve_folder

SHOWN_SKIPS = 10  # skipped files printed on the terminal; the CSV lists them all


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.predict", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="only these files, relative to the input folder")
    parser.add_argument("--input", help="folder to classify (default: params predict.input)")
    parser.add_argument("--model", help="model folder (default: models/best)")
    parser.add_argument("--output", type=Path, help="folder for predictions.csv and skipped.csv "
                        "(default: data/predictions, plus metrics/predict.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.output is None and (args.input or args.model or args.files):
        raise UserError("--input, --model and FILE classify outside the pipeline: pass --output DIR too "
                        "(data/predictions and metrics/predict.json are the predict stage's outputs, pinned by dvc.lock).")
    params = load_params().predict
    folder = resolve_folder(args.input, "--input") if args.input else resolve_folder(params.input)
    predictor = load_predictor(args.model or paths.BEST_MODEL)
    result = predict_folder(predictor, folder, params, only=args.files or None)

    out = args.output or paths.PREDICTIONS
    write_csv_atomic(result.predictions, out / paths.PREDICTIONS_CSV.name)
    write_csv_atomic(result.skipped, out / paths.PREDICTIONS_SKIPPED.name)
    if args.output is None:
        write_counts_atomic(result.report["labels"], paths.PREDICT_CLASS_COUNTS)
        write_json_atomic({key: value for key, value in result.report.items() if key != "labels"}, paths.PREDICT_REPORT)

    for row in result.skipped.head(SHOWN_SKIPS).itertuples():
        print(f"predict: skipped {row.path}: {row.reason} ({row.detail})", file=sys.stderr)
    if len(result.skipped) > SHOWN_SKIPS:
        print(f"predict: ... and {len(result.skipped) - SHOWN_SKIPS} more", file=sys.stderr)
    labels = ", ".join(f"{name} {count}" for name, count in result.report["labels"].items())
    print(f"predict: {result.report['predicted']} images classified ({labels}), {result.report['skipped']} skipped; "
          f"wrote {paths.relative(out / paths.PREDICTIONS_CSV.name)}")


if __name__ == "__main__":
    run_stage(main)
