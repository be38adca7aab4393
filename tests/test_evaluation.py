"""Evaluation metrics on predictions whose answers are known by hand, the plot rows DVC
draws, each metric's interval, the paired test, and what evaluate reports for a split."""
from __future__ import annotations

import numpy as np
import pytest

from lifecycle.evaluation import (
    METRIC_NAMES,
    classification_metrics,
    confusion_rows,
    evaluate_split,
    evaluation_summary,
    interval_keys,
    metric_intervals,
    paired_test,
    roc_auc,
    roc_points,
    with_intervals,
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


def test_roc_auc_of_a_single_class_is_undefined_and_its_interval_too():
    labels, probabilities = np.array([1, 1, 1]), probabilities_for([0.2, 0.6, 0.9])
    assert roc_auc(labels, probabilities) is None
    assert classification_metrics(labels, probabilities, CLASSES)["roc_auc"] is None
    intervals = metric_intervals(labels, probabilities, CLASSES, seed=0, resamples=50)
    assert intervals["roc_auc_low"] is None and intervals["roc_auc_high"] is None
    assert intervals["recall_low"] is not None


def test_resamples_of_a_single_class_do_not_pull_the_roc_auc_interval_towards_chance():
    """A perfect ranking of 1 cat and 3 dogs: a third of the resamples hold no cat and have no AUC;
    every resample that has one says 1."""
    intervals = metric_intervals(np.array([0, 1, 1, 1]), probabilities_for([0.1, 0.6, 0.7, 0.8]), CLASSES,
                                 seed=0, resamples=200)
    assert (intervals["roc_auc_low"], intervals["roc_auc_high"]) == (1.0, 1.0)


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


def noisy_predictions(images: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and dog probabilities that are right about 80% of the time."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, images)
    dog = np.clip(np.where(labels == 1, 0.65, 0.35) + rng.normal(scale=0.25, size=images), 0, 1)
    return labels, probabilities_for(list(dog))


def test_accuracy_has_wilsons_interval_and_the_others_a_seeded_bootstrap():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    probabilities = probabilities_for([0.1, 0.7, 0.2, 0.9, 0.8, 0.4, 0.6, 0.95])   # 6 of 8 right
    intervals = metric_intervals(labels, probabilities, CLASSES, seed=0, resamples=200)
    # Wilson's 95% score interval for 6 of 8 (a textbook value, not computed from the code under test)
    assert (intervals["accuracy_low"], intervals["accuracy_high"]) == (pytest.approx(0.40928, abs=1e-5),
                                                                       pytest.approx(0.92852, abs=1e-5))
    assert set(intervals) == {key for metric in METRIC_NAMES for key in interval_keys(metric)}

    labels, probabilities = noisy_predictions(300)
    scores = classification_metrics(labels, probabilities, CLASSES)
    first = metric_intervals(labels, probabilities, CLASSES, seed=1, resamples=300)
    assert metric_intervals(labels, probabilities, CLASSES, seed=1, resamples=300) == first   # seeded: the same bytes
    assert metric_intervals(labels, probabilities, CLASSES, seed=2, resamples=300) != first
    for metric in METRIC_NAMES:
        low, high = interval_keys(metric)
        assert first[low] < scores[metric] < first[high], metric
        assert 0.02 < first[high] - first[low] < 0.2, metric   # about +-0.045 for 300 images near 0.8
    # four times the images: about half the width
    labels, probabilities = noisy_predictions(1200)
    wide, narrow = first, metric_intervals(labels, probabilities, CLASSES, seed=1, resamples=300)
    for metric in METRIC_NAMES:
        low, high = interval_keys(metric)
        assert 0.35 < (narrow[high] - narrow[low]) / (wide[high] - wide[low]) < 0.7, metric


def test_a_report_puts_each_interval_beside_its_metric():
    labels, probabilities = noisy_predictions(50)
    scores = classification_metrics(labels, probabilities, CLASSES)
    report = with_intervals(scores, metric_intervals(labels, probabilities, CLASSES, seed=0, resamples=100))
    assert list(report)[:3] == ["accuracy", "accuracy_low", "accuracy_high"]
    assert len(report) == 3 * len(METRIC_NAMES) and "images" not in report


def test_mcnemars_exact_test_counts_only_the_discordant_images():
    # 100 images: both right on 80, A alone on 10, B alone on 1, both wrong on 9
    a = np.array([True] * 80 + [True] * 10 + [False] * 1 + [False] * 9)
    b = np.array([True] * 80 + [False] * 10 + [True] * 1 + [False] * 9)
    test = paired_test(a, b)
    assert (test.images, test.a_only, test.b_only, test.discordant) == (100, 10, 1, 11)
    assert test.p_value == pytest.approx(12 / 2048)          # P(X >= 10), X ~ Binomial(11, 1/2)
    assert test.difference == pytest.approx(0.09)
    assert 0 < test.difference_low < 0.09 < test.difference_high <= 0.11
    assert test.better(0.05) and not test.better(0.005)
    backwards = paired_test(b, a)                            # one-sided: B is not better than A
    assert backwards.p_value > 0.99 and not backwards.better(0.05)
    assert backwards.difference_high < 0
    same = paired_test(a, a)
    assert (same.p_value, same.discordant, same.difference_low, same.difference_high) == (1.0, 0, 0.0, 0.0)
    with pytest.raises(ValueError, match="different images"):
        paired_test(a, b[:50])


def test_a_split_is_evaluated_into_scores_with_intervals_and_the_rows_behind_them():
    labels, probabilities = noisy_predictions(60)
    result = evaluate_split(labels, probabilities, CLASSES, seed=3, resamples=200)
    scores = classification_metrics(labels, probabilities, CLASSES)
    assert result.images == 60
    assert list(result.scores) == [key for name in METRIC_NAMES for key in (name, *interval_keys(name))]
    for name in METRIC_NAMES:
        low, high = interval_keys(name)
        assert result.scores[name] == scores[name]
        assert result.scores[low] <= result.scores[name] <= result.scores[high]
    assert result.confusion.equals(confusion_rows(labels, probabilities, CLASSES))   # one row per image, in order
    assert result.roc.equals(roc_points(labels, probabilities))
    again = evaluate_split(labels, probabilities, CLASSES, seed=3, resamples=200)
    assert again.scores == result.scores                                            # seeded: the same intervals
    assert evaluate_split(labels, probabilities, CLASSES, seed=4, resamples=200).scores != result.scores


def test_the_evaluate_line_shows_the_test_scores_and_val_accuracy_with_their_intervals():
    def split(accuracy: float) -> dict[str, float]:
        return {"accuracy": accuracy, "accuracy_low": accuracy - 0.1, "accuracy_high": accuracy + 0.05,
                "f1": 0.5, "f1_low": 0.4, "f1_high": 0.6, "roc_auc": 0.75, "roc_auc_low": 0.7, "roc_auc_high": 0.8}
    assert evaluation_summary("transfer", {"val": split(0.8), "test": split(0.9)}, 286) == (
        "evaluate transfer (test, 286 images; 95% intervals): accuracy 0.9000 [0.8000, 0.9500], "
        "f1 0.5000 [0.4000, 0.6000], roc_auc 0.7500 [0.7000, 0.8000]; val accuracy 0.8000 [0.7000, 0.8500]")
