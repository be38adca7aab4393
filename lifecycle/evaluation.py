"""Evaluate and select (seed step 8c): how good each trained model is, and which one ships.

In: a model's class probabilities on a split and the true labels. Out: accuracy,
precision, recall, F1 and ROC AUC (``classification_metrics``), the scores a reviewer
compares, and the rows DVC draws as a confusion matrix and a ROC curve, the breakdowns
behind them. ``evaluate`` reports them for the validation and the test split; ``select``
compares the models on validation only, so the test split stays an unbiased report of the
chosen model.

For two classes, precision, recall and F1 are about the second class (``dog``), and ROC
AUC uses its probability; for more classes they are macro averages (one-vs-rest AUC).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

# The models `evaluate` runs for (dvc.yaml's foreach) and `select` chooses among, in the
# order that breaks ties: the simplest model first.
CANDIDATES = ("train", "finetune", "transfer")
METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "roc_auc")


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """``METRIC_NAMES`` and the number of images. The confusion matrix is not a score: it is
    drawn from :func:`confusion_rows` (DVC's ``confusion`` template), not kept as counts."""
    labels = np.asarray(labels)
    predictions = probabilities.argmax(axis=1)
    indices = list(range(len(classes)))
    binary = len(classes) == 2
    average = "binary" if binary else "macro"
    extra = {"pos_label": 1} if binary else {"labels": indices}
    return {
        "accuracy": skm.accuracy_score(labels, predictions),
        "precision": skm.precision_score(labels, predictions, average=average, zero_division=0, **extra),
        "recall": skm.recall_score(labels, predictions, average=average, zero_division=0, **extra),
        "f1": skm.f1_score(labels, predictions, average=average, zero_division=0, **extra),
        "roc_auc": roc_auc(labels, probabilities),
        "images": int(len(labels)),
    }


def roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """ROC AUC; 0.5 (chance) when a split holds a single class and AUC is undefined."""
    if len(np.unique(labels)) < 2:
        return 0.5
    if probabilities.shape[1] == 2:
        return float(skm.roc_auc_score(labels, probabilities[:, 1]))
    return float(skm.roc_auc_score(labels, probabilities, multi_class="ovr", labels=list(range(probabilities.shape[1]))))


def confusion_rows(labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per image (actual, predicted class name): DVC's ``confusion`` template counts them."""
    predictions = probabilities.argmax(axis=1)
    return pd.DataFrame({"actual": [classes[i] for i in labels], "predicted": [classes[i] for i in predictions]})


def roc_points(labels: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """The ROC curve of the second class (fpr, tpr, threshold); the diagonal if undefined."""
    if probabilities.shape[1] != 2 or len(np.unique(labels)) < 2:
        return pd.DataFrame({"fpr": [0.0, 1.0], "tpr": [0.0, 1.0], "threshold": [1.0, 0.0]})
    fpr, tpr, thresholds = skm.roc_curve(labels, probabilities[:, 1])
    thresholds = np.minimum(thresholds, 1.0)  # the first threshold is +inf: "predict nothing positive"
    return pd.DataFrame({"fpr": fpr.round(6), "tpr": tpr.round(6), "threshold": thresholds.round(6)})


def select_best(reports: dict[str, dict[str, Any]], metric: str) -> str:
    """The candidate with the highest validation ``metric`` (ties: the earlier, simpler one)."""
    order = {name: i for i, name in enumerate(reports)}
    return max(reports, key=lambda name: (reports[name]["val"][metric], -order[name]))
