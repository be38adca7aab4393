"""Evaluate (seed step 8c): one trained model on the validation and the test split:
accuracy, precision, recall, F1 and ROC AUC as metrics (what a reviewer compares, and what
``select`` chooses by), each with its 95% interval beside it (``accuracy_low``,
``accuracy_high``, ...: Wilson for accuracy, a bootstrap over the split's images seeded by
``seed`` for the others), so a reviewer sees how far a number may move by chance; both
splits' confusion matrices and the test split's ROC curve as DVC plots (the breakdown behind
the scores). dvc.yaml runs it for every model (foreach). Probabilities come from the same
forward path the service answers with (:func:`lifecycle.models.class_probabilities`).

The validation confusion rows are one row per image in the split's order, so they also say
which images the model gets right: ``select``'s paired test against the runner-up reads them.

usage: python -m stages.evaluate <train|finetune|transfer>
in: models/<model>, data/processed/split/{val,test}.npz
out: metrics/evaluate/<model>.json,
     plots/evaluate/<model>/{confusion,roc}.csv (test), plots/evaluate/<model>/confusion_val.csv
params: seed, evaluate.resamples
"""
from __future__ import annotations

import sys

from lifecycle.core import paths
from lifecycle.core.errors import UserError, run_stage
from lifecycle.core.io import read_arrays, write_csv_atomic, write_json_atomic
from lifecycle.core.params import load_params
from lifecycle.evaluation import (
    CANDIDATES,
    classification_metrics,
    confusion_rows,
    interval_keys,
    metric_intervals,
    roc_points,
    score_text,
    with_intervals,
)
from lifecycle.models import class_probabilities, load_model


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in CANDIDATES:
        raise UserError(f"usage: python -m stages.evaluate <model>, where model is one of {', '.join(CANDIDATES)}.")
    name = sys.argv[1]
    params = load_params()
    model, spec = load_model(paths.model_dir(name))
    report, images = {}, {}
    for split, path, confusion in (("val", paths.VAL, "confusion_val.csv"), ("test", paths.TEST, "confusion.csv")):
        arrays = read_arrays(path)
        labels = arrays["labels"]
        probabilities = class_probabilities(model, arrays["images"], spec)
        scores = classification_metrics(labels, probabilities, spec.classes)
        intervals = metric_intervals(labels, probabilities, spec.classes, params.seed, params.evaluate.resamples)
        report[split], images[split] = with_intervals(scores, intervals), scores["images"]
        write_csv_atomic(confusion_rows(labels, probabilities, spec.classes), paths.evaluation_plots(name) / confusion)
        if split == "test":
            write_csv_atomic(roc_points(labels, probabilities), paths.evaluation_plots(name) / "roc.csv")
    write_json_atomic(report, paths.evaluation_report(name))
    test, val = report["test"], report["val"]

    def shown(scores: dict[str, float], metric: str) -> str:
        low, high = interval_keys(metric)
        return f"{metric} {score_text(scores[metric])} [{score_text(scores[low])}, {score_text(scores[high])}]"

    print(f"evaluate {name} (test, {images['test']} images; 95% intervals): {shown(test, 'accuracy')}, "
          f"{shown(test, 'f1')}, {shown(test, 'roc_auc')}; val {shown(val, 'accuracy')}")


if __name__ == "__main__":
    run_stage(main)
