"""Evaluation metrics on predictions whose answers are known by hand, the plot rows DVC
draws, and selection on the validation split only."""
from __future__ import annotations

import numpy as np
import pytest

from lifecycle.evaluation import (
    METRIC_NAMES,
    classification_metrics,
    confusion_rows,
    roc_auc,
    roc_points,
    select_best,
)

CLASSES = ["cat", "dog"]


def confusion_counts(labels, probabilities, classes) -> dict[tuple[str, str], int]:
    """What DVC's ``confusion`` template draws from the per-image rows: a count per (actual, predicted)."""
    return confusion_rows(labels, probabilities, classes).value_counts().to_dict()


def probabilities_for(dog_probability: list[float]) -> np.ndarray:
    dog = np.array(dog_probability)
    return np.stack([1 - dog, dog], axis=1)


def test_metrics_on_known_predictions():
    # truth:      cat  cat  cat  dog  dog  dog  dog  dog
    # predicted:  cat  dog  cat  dog  dog  cat  dog  dog     (dog when p > 0.5)
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    probabilities = probabilities_for([0.1, 0.7, 0.2, 0.9, 0.8, 0.4, 0.6, 0.95])
    result = classification_metrics(labels, probabilities, CLASSES)
    # TP (dog as dog) 4, FP (cat as dog) 1, FN (dog as cat) 1, TN 2
    assert result["accuracy"] == pytest.approx(6 / 8)
    assert result["precision"] == pytest.approx(4 / 5)
    assert result["recall"] == pytest.approx(4 / 5)
    assert result["f1"] == pytest.approx(0.8)
    # AUC: of 3 x 5 (cat, dog) pairs, the dog scores higher in all but (0.7 vs 0.4, 0.7 vs 0.6)
    assert result["roc_auc"] == pytest.approx(13 / 15)
    assert result["images"] == 8
    assert set(result) == {*METRIC_NAMES, "images"}  # the confusion matrix is a plot, not counts here
    assert confusion_counts(labels, probabilities, CLASSES) == {("cat", "cat"): 2, ("cat", "dog"): 1,
                                                                ("dog", "cat"): 1, ("dog", "dog"): 4}


def test_three_classes_use_macro_averages():
    labels = np.array([0, 1, 2, 2])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    result = classification_metrics(labels, probabilities, ["cat", "dog", "fox"])
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["recall"] == pytest.approx((1 + 1 + 0.5) / 3)
    fox = {predicted: n for (actual, predicted), n in confusion_counts(labels, probabilities, ["cat", "dog", "fox"]).items()
           if actual == "fox"}
    assert fox == {"cat": 1, "fox": 1}


def test_roc_auc_of_a_single_class_split_is_chance_not_an_error():
    assert roc_auc(np.array([1, 1, 1]), probabilities_for([0.2, 0.6, 0.9])) == 0.5


def test_plot_rows_for_the_confusion_matrix_and_roc_curve():
    labels = np.array([0, 1, 1, 0])
    probabilities = probabilities_for([0.3, 0.8, 0.4, 0.6])
    rows = confusion_rows(labels, probabilities, CLASSES)
    assert rows.to_dict("records") == [
        {"actual": "cat", "predicted": "cat"},
        {"actual": "dog", "predicted": "dog"},
        {"actual": "dog", "predicted": "cat"},
        {"actual": "cat", "predicted": "dog"},
    ]
    curve = roc_points(labels, probabilities)
    assert list(curve.columns) == ["fpr", "tpr", "threshold"]
    assert (curve.iloc[0]["fpr"], curve.iloc[0]["tpr"]) == (0.0, 0.0)
    assert (curve.iloc[-1]["fpr"], curve.iloc[-1]["tpr"]) == (1.0, 1.0)
    assert curve["threshold"].max() <= 1.0  # no infinity in a CSV
    assert curve["fpr"].is_monotonic_increasing and curve["tpr"].is_monotonic_increasing


def test_selection_uses_validation_only_and_ties_go_to_the_simpler_model():
    reports = {
        "train": {"val": {"accuracy": 0.90, "f1": 0.7}, "test": {"accuracy": 0.80, "f1": 0.9}},
        "finetune": {"val": {"accuracy": 0.85, "f1": 0.8}, "test": {"accuracy": 0.99, "f1": 0.99}},
        "transfer": {"val": {"accuracy": 0.90, "f1": 0.6}, "test": {"accuracy": 0.95, "f1": 0.5}},
    }
    assert select_best(reports, "accuracy") == "train"  # tie with transfer; test would say finetune
    assert select_best(reports, "f1") == "finetune"
