"""Tune (seed step 8e): skorch + GridSearchCV over the CNN's hyperparameters, with SMOTE
inside the cross-validation pipeline so it only ever resamples training folds.

in: data/processed/split/train.npz (NOT train_balanced: resampling happens per fold),
    data/processed/classes.json
out: metrics/tune.json (best params and score), plots/tune/results.csv (every candidate, every fold),
     plots/tune/class_counts.csv (the images searched, per class)
params: seed, tune.*, synthesize.* (the sampler, as the synthesize stage uses it)
"""
from __future__ import annotations

import math
import time

from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import (
    read_labelled,
    write_counts_atomic,
    write_csv_atomic,
    write_json_atomic,
)
from lifecycle.core.params import load_params
from lifecycle.core.progress import progress
from lifecycle.synthesis import make_sampler
from lifecycle.tuning import check_tune_params, tune


def main() -> None:
    pipeline = load_params()
    params, seed = pipeline.tune, pipeline.seed
    check_tune_params(params)
    sampler = make_sampler(pipeline.synthesize, seed)
    train, classes = read_labelled(paths.TRAIN)

    fits = math.prod(len(values) for values in params.grid.values()) * params.folds
    bar = progress(range(fits), desc="tune: fits", total=fits)
    started = time.perf_counter()
    result = tune(train["images"], train["labels"], classes, params, sampler, seed, on_fold_scored=lambda _: bar.update())
    bar.close()

    summary = result.summary
    write_csv_atomic(result.results, paths.TUNE_RESULTS)
    write_counts_atomic(summary["class_counts"], paths.TUNE_CLASS_COUNTS)
    # The search's setup is in params.yaml (tune.*, synthesize.method) and results.csv (one row
    # per candidate, one column per fold): the metrics keep what the search found.
    write_json_atomic({key: summary[key] for key in ("best_params", "best_score", "best_score_std")}, paths.TUNE_SUMMARY)
    print(
        f"tune: {summary['candidates']} candidates x {summary['folds']} folds on {summary['images']} images "
        f"in {time.perf_counter() - started:.0f}s; best {summary['scoring']} {summary['best_score']:.3f} "
        f"with {summary['best_params']}"
    )


if __name__ == "__main__":
    run_stage(main)
