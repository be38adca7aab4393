"""Select: the best of the trained models by one metric on the VALIDATION split, copied to
models/best/ with a sidecar that carries everything serving needs (classes, image size,
normalisation, architecture) and, under ``info``, where it came from; and McNemar's exact test
of the choice against the runner-up on the same validation images (lifecycle/selection.py).

in: metrics/evaluate/{train,finetune,transfer}.json, models/{train,finetune,transfer},
    plots/evaluate/{train,finetune,transfer}/confusion_val.csv
out: models/best/{model.pt,model.json}, metrics/select.json (under ``best``: the model, its
     validation and test scores with their intervals, and the paired test against the runner-up)
params: select.metric, select.alpha
"""
from __future__ import annotations

import dataclasses
import shutil

import pandas as pd

from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import atomic_dir, read_json, write_json_atomic
from lifecycle.core.params import load_params
from lifecycle.evaluation import CANDIDATES
from lifecycle.models import SIDECAR_FILE, WEIGHTS_FILE, load_spec
from lifecycle.selection import (
    best_model_info,
    compare_with_runner_up,
    runner_up,
    score_text,
    select_best,
    selection_metrics,
    selection_summary,
)


def main() -> None:
    params = load_params().select
    reports = {name: read_json(paths.evaluation_report(name)) for name in CANDIDATES}
    chosen, second = select_best(reports, params.metric), runner_up(reports, params.metric)
    source = load_spec(paths.model_dir(chosen))
    spec = dataclasses.replace(source, info=best_model_info(chosen, reports[chosen], params.metric, source.info))
    with atomic_dir(paths.BEST_MODEL) as staging:
        shutil.copyfile(paths.model_dir(chosen) / WEIGHTS_FILE, staging / WEIGHTS_FILE)
        write_json_atomic(spec.to_dict(), staging / SIDECAR_FILE)
    rows = {name: pd.read_csv(paths.evaluation_plots(name) / "confusion_val.csv") for name in (chosen, second)}
    against, test = compare_with_runner_up(chosen, second, rows, params.alpha)
    write_json_atomic(selection_metrics(chosen, reports[chosen], against), paths.METRICS / "select.json")
    print(selection_summary(reports, chosen, params.metric, params.alpha, against, test))


if __name__ == "__main__":
    run_stage(main)
