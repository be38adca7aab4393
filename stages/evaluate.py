"""Evaluate (seed step 8c): one trained model on the validation and the test split:
accuracy, precision, recall, F1 and ROC AUC, each with its 95% interval beside it, both
splits' confusion matrices and the test split's ROC curve (lifecycle/evaluation.py,
``evaluate_split``). dvc.yaml runs it for every model (foreach). Probabilities come from the
same forward path the service answers with (:func:`lifecycle.models.class_probabilities`).

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
from lifecycle.evaluation import CANDIDATES, evaluate_split, evaluation_summary
from lifecycle.models import class_probabilities, load_model


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in CANDIDATES:
        raise UserError(f"usage: python -m stages.evaluate <model>, where model is one of {', '.join(CANDIDATES)}.")
    name = sys.argv[1]
    params = load_params()
    model, spec = load_model(paths.model_dir(name))
    report = {}
    for split, path, confusion in (("val", paths.VAL, "confusion_val.csv"), ("test", paths.TEST, "confusion.csv")):
        arrays = read_arrays(path)
        probabilities = class_probabilities(model, arrays["images"], spec)
        result = evaluate_split(arrays["labels"], probabilities, spec.classes, params.seed, params.evaluate.resamples)
        report[split] = result.scores
        write_csv_atomic(result.confusion, paths.evaluation_plots(name) / confusion)
        if split == "test":
            write_csv_atomic(result.roc, paths.evaluation_plots(name) / "roc.csv")
            test_images = result.images
    write_json_atomic(report, paths.evaluation_report(name))
    print(evaluation_summary(name, report, test_images))


if __name__ == "__main__":
    run_stage(main)
