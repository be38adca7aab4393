"""Evaluate (seed step 8c): one trained model on the validation and the test split:
accuracy, precision, recall, F1, ROC AUC and the confusion matrix; the test split's
confusion matrix and ROC curve as DVC plots. dvc.yaml runs it for every model (foreach).

usage: python -m stages.evaluate <train|finetune|transfer>
in: models/<model>, data/processed/split/{val,test}.npz
out: metrics/evaluate/<model>.json, plots/evaluate/<model>/{confusion,roc}.csv
params: none
"""
from __future__ import annotations

import sys

from lifecycle import paths
from lifecycle.errors import UserError, run_stage
from lifecycle.evaluation import CANDIDATES, classification_metrics, confusion_rows, roc_points, softmax
from lifecycle.images import to_model_input
from lifecycle.io import read_arrays, write_csv_atomic, write_json_atomic
from lifecycle.models import load_model
from lifecycle.training import Samples, predict_logits, seed_everything


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in CANDIDATES:
        raise UserError(f"usage: python -m stages.evaluate <model>, where model is one of {', '.join(CANDIDATES)}.")
    name = sys.argv[1]
    seed_everything(0)
    model, spec = load_model(paths.model_dir(name))
    report = {}
    for split, path in (("val", paths.VAL), ("test", paths.TEST)):
        arrays = read_arrays(path)
        samples = Samples.from_images(arrays["images"], arrays["labels"])
        logits = predict_logits(model, samples.inputs, lambda b: to_model_input(b, spec.mean, spec.std),
                                desc=f"evaluate {name}: {split}")
        probabilities = softmax(logits.numpy().astype("float64"))
        labels = samples.labels.numpy()
        report[split] = classification_metrics(labels, probabilities, spec.classes)
        if split == "test":
            write_csv_atomic(confusion_rows(labels, probabilities, spec.classes), paths.evaluation_plots(name) / "confusion.csv")
            write_csv_atomic(roc_points(labels, probabilities), paths.evaluation_plots(name) / "roc.csv")
    write_json_atomic(report, paths.evaluation_report(name))
    test = report["test"]
    print(f"evaluate {name} (test, {test['images']} images): accuracy {test['accuracy']:.4f}, f1 {test['f1']:.4f}, "
          f"roc_auc {test['roc_auc']:.4f}; val accuracy {report['val']['accuracy']:.4f}")


if __name__ == "__main__":
    run_stage(main)
