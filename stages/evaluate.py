"""Evaluate (seed step 8c): one trained model on the validation and the test split:
accuracy, precision, recall, F1 and ROC AUC as metrics (what a reviewer compares, and what
``select`` chooses by); both splits' confusion matrices and the test split's ROC curve as
DVC plots (the breakdown behind the scores). dvc.yaml runs it for every model (foreach).
Probabilities come from the same forward path the service answers with
(:func:`lifecycle.models.class_probabilities`).

usage: python -m stages.evaluate <train|finetune|transfer>
in: models/<model>, data/processed/split/{val,test}.npz
out: metrics/evaluate/<model>.json,
     plots/evaluate/<model>/{confusion,roc}.csv (test), plots/evaluate/<model>/confusion_val.csv
params: none
"""
from __future__ import annotations

import sys

from lifecycle.core import paths
from lifecycle.core.errors import UserError, run_stage
from lifecycle.core.io import read_arrays, write_csv_atomic, write_json_atomic
from lifecycle.evaluation import (
    CANDIDATES,
    METRIC_NAMES,
    classification_metrics,
    confusion_rows,
    roc_points,
)
from lifecycle.models import class_probabilities, load_model


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in CANDIDATES:
        raise UserError(f"usage: python -m stages.evaluate <model>, where model is one of {', '.join(CANDIDATES)}.")
    name = sys.argv[1]
    model, spec = load_model(paths.model_dir(name))
    report, images = {}, {}
    for split, path, confusion in (("val", paths.VAL, "confusion_val.csv"), ("test", paths.TEST, "confusion.csv")):
        arrays = read_arrays(path)
        labels = arrays["labels"]
        probabilities = class_probabilities(model, arrays["images"], spec)
        scores = classification_metrics(labels, probabilities, spec.classes)
        report[split], images[split] = {metric: scores[metric] for metric in METRIC_NAMES}, scores["images"]
        write_csv_atomic(confusion_rows(labels, probabilities, spec.classes), paths.evaluation_plots(name) / confusion)
        if split == "test":
            write_csv_atomic(roc_points(labels, probabilities), paths.evaluation_plots(name) / "roc.csv")
    write_json_atomic(report, paths.evaluation_report(name))
    test = report["test"]
    print(f"evaluate {name} (test, {images['test']} images): accuracy {test['accuracy']:.4f}, f1 {test['f1']:.4f}, "
          f"roc_auc {test['roc_auc']:.4f}; val accuracy {report['val']['accuracy']:.4f}")


if __name__ == "__main__":
    run_stage(main)
