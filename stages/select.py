"""Select: the best of the trained models by one metric on the VALIDATION split (never
test, which stays an unbiased report), copied to models/best/ with a sidecar that carries
everything serving needs (classes, image size, normalisation, architecture) and, under
``info``, where it came from: the source stage, its validation and test metrics, its params.

Is the choice beyond noise? The chosen model is tested against the runner-up (the best of the
others by the same metric) on the same validation images with McNemar's exact test
(:func:`lifecycle.evaluation.paired_test`): which images each gets right comes from evaluate's
validation confusion rows, one row per image in the split's order. ``best.runner_up`` records
the runner-up, the one-sided p-value, the images exactly one of them gets right, and
``beyond_noise``: whether the chosen model is right on significantly more images at
``select.alpha``. The choice itself stays the highest score: a choice within noise is still a
choice, but the reader is told.

in: metrics/evaluate/{train,finetune,transfer}.json, models/{train,finetune,transfer},
    plots/evaluate/{train,finetune,transfer}/confusion_val.csv
out: models/best/{model.pt,model.json}, metrics/select.json (under ``best``: the model, its
     validation and test scores with their intervals, and the paired test against the runner-up;
     a name no other metrics file uses, so ``dvc exp show`` heads these columns
     ``best.test.accuracy``, not ``metrics/select.json:test.accuracy``)
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
from lifecycle.evaluation import (
    CANDIDATES,
    correct_from_confusion_rows,
    paired_test,
    runner_up,
    score_text,
    select_best,
)
from lifecycle.models import SIDECAR_FILE, WEIGHTS_FILE, load_spec


def main() -> None:
    params = load_params().select
    reports = {name: read_json(paths.evaluation_report(name)) for name in CANDIDATES}
    chosen = select_best(reports, params.metric)
    source = load_spec(paths.model_dir(chosen))
    headline = {split: dict(reports[chosen][split]) for split in ("val", "test")}  # each metric and its interval
    info = {
        "source": chosen,
        "selected_by": f"val.{params.metric}",
        "val": headline["val"],
        "test": headline["test"],
        "params": source.info.get("params", {}),
        "training": {k: v for k, v in source.info.items() if k != "params"},
    }
    spec = dataclasses.replace(source, info=info)
    with atomic_dir(paths.BEST_MODEL) as staging:
        shutil.copyfile(paths.model_dir(chosen) / WEIGHTS_FILE, staging / WEIGHTS_FILE)
        write_json_atomic(spec.to_dict(), staging / SIDECAR_FILE)
    # The candidates' own scores are in metrics/evaluate/ and select.metric in params.yaml:
    # repeating them here would only add columns to `dvc exp show`.
    second = runner_up(reports, params.metric)
    correct = {name: correct_from_confusion_rows(pd.read_csv(paths.evaluation_plots(name) / "confusion_val.csv"))
               for name in (chosen, second)}
    test = paired_test(correct[chosen], correct[second])
    against = {"model": second, "paired_test": test.TEST, "p_value": round(test.p_value, 6), "discordant": test.discordant,
               "beyond_noise": test.better(params.alpha)}
    write_json_atomic({"best": {"model": chosen, **headline, "runner_up": against}}, paths.METRICS / "select.json")
    candidates = {name: reports[name]["val"][params.metric] for name in CANDIDATES}
    verdict = "beyond noise" if against["beyond_noise"] else "within noise"
    print(f"select: {chosen} (val {params.metric} {score_text(candidates[chosen])}; "
          + ", ".join(f"{n} {score_text(v)}" for n, v in candidates.items()) + f"); against {second} on the same "
          f"{test.images} validation images: right on {test.a_only} it misses, wrong on {test.b_only} it gets, "
          f"McNemar p={test.p_value:.3g}: {verdict} at alpha {params.alpha:g}")


if __name__ == "__main__":
    run_stage(main)
