"""Evaluate (seed step 8c): how good each trained model is (``evaluate_split``).

In: a model's class probabilities on a split and the true labels. Out: accuracy,
precision, recall, F1 and ROC AUC (``classification_metrics``), the scores a reviewer
compares, and the rows DVC draws as a confusion matrix and a ROC curve, the breakdowns
behind them. ``evaluate`` reports them for the validation and the test split; ``select``
(lifecycle/selection.py) compares the models on validation only, so the test split stays an
unbiased report of the chosen model.

For two classes, precision, recall and F1 are about the second class (``dog``), and ROC
AUC uses its probability; for more classes they are macro averages (one-vs-rest AUC). ROC
AUC is undefined on images of a single class: None, null in a metrics file, which ``dvc
metrics`` and the mirror skip and ``select`` ranks below any score.

Every headline number carries its noise (``metric_intervals``): a 95% interval, written
beside the metric as ``<metric>_low`` and ``<metric>_high``: Wilson's score interval for
accuracy (a proportion of images right), and a seeded percentile bootstrap over the split's
images for the others. Two models on the same images are compared by a paired test
(``paired_test``): McNemar's exact test on the images exactly one of them gets right.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

# The models `evaluate` runs for (dvc.yaml's foreach) and `select` chooses among, in the
# order that breaks ties: the simplest model first.
CANDIDATES = ("train", "finetune", "transfer")
METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "roc_auc")
CONFIDENCE = 0.95  # of every interval: the headline metrics' and the paired difference's


def interval_keys(metric: str) -> tuple[str, str]:
    """The names of ``metric``'s interval bounds, beside it in every metrics file: accuracy_low, accuracy_high."""
    return f"{metric}_low", f"{metric}_high"


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


def roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """ROC AUC; None (null in a metrics file) when ``labels`` hold a single class: it is undefined."""
    if len(np.unique(labels)) < 2:
        return None
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


def score_text(value: float | None) -> str:
    """A score as the stages print it: four decimals, or "undefined" (the ROC AUC of a single class)."""
    return "undefined" if value is None else f"{value:.4f}"


def metric_intervals(labels: np.ndarray, probabilities: np.ndarray, classes: list[str], seed: int,
                     resamples: int) -> dict[str, float | None]:
    """The 95% interval of each of ``METRIC_NAMES``, keyed by :func:`interval_keys`.

    Accuracy: Wilson's score interval (scipy's ``binomtest(...).proportion_ci``), exact for a
    proportion of images right and never outside [0, 1]. The others are not proportions of
    the images: a percentile bootstrap (scipy's ``bootstrap``) over the split's images, the
    images resampled together with their labels, ``resamples`` times from ``seed``, so the
    same predictions always give the same interval. A resample of a single class has no ROC
    AUC: its interval is taken over the resamples that have one (None if none has)."""
    labels = np.asarray(labels)
    right = int((probabilities.argmax(axis=1) == labels).sum())
    wilson = stats.binomtest(right, len(labels)).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    low, high = interval_keys("accuracy")
    intervals = {low: float(wilson.low), high: float(wilson.high)}
    others = ["precision", "recall", "f1", "roc_auc"]  # the order ``scores`` returns them in

    binary = len(classes) == 2
    extra = {"average": "binary", "pos_label": 1} if binary else {"average": "macro", "labels": list(range(len(classes)))}
    predictions = probabilities.argmax(axis=1)

    def scores(images: np.ndarray) -> np.ndarray:  # one resample (the indices of its images): others' values
        precision, recall, f1, _ = skm.precision_recall_fscore_support(labels[images], predictions[images],
                                                                       zero_division=0, **extra)
        auc = roc_auc(labels[images], probabilities[images])
        return np.array([precision, recall, f1, np.nan if auc is None else auc])

    with warnings.catch_warnings():  # scipy's interval is nan where a resample is: see below
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap((np.arange(len(labels)),), scores, n_resamples=resamples, confidence_level=CONFIDENCE,
                                 method="percentile", vectorized=False, rng=np.random.default_rng(seed))
    # The percentile interval as bootstrap computes it, over the resamples where the metric is defined.
    tail = (1 - CONFIDENCE) / 2
    bounds = stats.quantile(result.bootstrap_distribution, [tail, 1 - tail], axis=-1, nan_policy="omit")
    for name, (low_value, high_value) in zip(others, bounds):
        low, high = interval_keys(name)
        intervals[low], intervals[high] = _defined(low_value), _defined(high_value)
    return intervals


def _defined(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def with_intervals(scores: dict[str, float | None], intervals: dict[str, float | None]) -> dict[str, float | None]:
    """Each metric followed by its interval, in ``METRIC_NAMES`` order: what a metrics file holds per split."""
    report: dict[str, float | None] = {}
    for name in METRIC_NAMES:
        low, high = interval_keys(name)
        report.update({name: scores[name], low: intervals[low], high: intervals[high]})
    return report


def correct_per_image(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Whether the model is right about each image (bool, in the split's order): what a paired test compares."""
    return probabilities.argmax(axis=1) == np.asarray(labels)


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """McNemar's exact test of model A against model B on the same images (one-sided: A is better).

    Only the discordant images say anything: ``a_only`` that A gets right and B wrong,
    ``b_only`` the reverse. With no difference between the models each discordant image is a
    fair coin, so the p-value is the binomial tail of ``a_only`` of ``discordant``. The
    interval is of the paired difference in accuracy, A minus B: the discordant share of the
    images times 2 x (A's share of the discordant images) - 1, that share's interval exact
    (Clopper-Pearson, the interval that matches the exact test; Wilson's can exclude "no
    difference" where the test does not, 4 of 4 for instance)."""

    images: int
    a_only: int
    b_only: int
    p_value: float
    difference: float          # accuracy A minus accuracy B, on these images
    difference_low: float
    difference_high: float

    TEST = "mcnemar_exact"

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only

    def better(self, alpha: float) -> bool:
        """A is right on significantly more images than B, at level ``alpha``."""
        return self.p_value < alpha


def paired_test(a_correct: np.ndarray, b_correct: np.ndarray) -> PairedTest:
    """:class:`PairedTest` of A against B from their per-image correctness on the same images."""
    a_correct, b_correct = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a_correct.shape != b_correct.shape:
        raise ValueError(f"the models were scored on different images ({a_correct.shape[0]} and {b_correct.shape[0]})")
    images = int(a_correct.size)
    a_only, b_only = int((a_correct & ~b_correct).sum()), int((b_correct & ~a_correct).sum())
    discordant = a_only + b_only
    if discordant == 0:  # the same answers on every image: no evidence either way
        return PairedTest(images, 0, 0, 1.0, 0.0, 0.0, 0.0)
    test = stats.binomtest(a_only, discordant, 0.5, alternative="greater")
    share = stats.binomtest(a_only, discordant).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    scale = discordant / images
    return PairedTest(images, a_only, b_only, float(test.pvalue), (a_only - b_only) / images,
                      float(scale * (2 * share.low - 1)), float(scale * (2 * share.high - 1)))


@dataclasses.dataclass(frozen=True)
class SplitEvaluation:
    """What evaluate reports for one split: each of ``METRIC_NAMES`` followed by its interval, the
    number of images, the confusion rows (one per image, in the split's order) and the ROC curve."""

    scores: dict[str, float]
    images: int
    confusion: pd.DataFrame
    roc: pd.DataFrame


def evaluate_split(labels: np.ndarray, probabilities: np.ndarray, classes: list[str], seed: int,
                   resamples: int) -> SplitEvaluation:
    """A model's class probabilities on one split against its labels: :class:`SplitEvaluation`."""
    scores = classification_metrics(labels, probabilities, classes)
    intervals = metric_intervals(labels, probabilities, classes, seed, resamples)
    return SplitEvaluation(with_intervals(scores, intervals), scores["images"],
                           confusion_rows(labels, probabilities, classes), roc_points(labels, probabilities))


def evaluation_summary(name: str, report: dict[str, dict[str, float]], test_images: int) -> str:
    """The line evaluate prints: test accuracy, F1 and ROC AUC and validation accuracy, each with its interval."""

    def shown(scores: dict[str, float], metric: str) -> str:
        low, high = interval_keys(metric)
        return f"{metric} {score_text(scores[metric])} [{score_text(scores[low])}, {score_text(scores[high])}]"

    test, val = report["test"], report["val"]
    return (f"evaluate {name} (test, {test_images} images; 95% intervals): {shown(test, 'accuracy')}, "
            f"{shown(test, 'f1')}, {shown(test, 'roc_auc')}; val {shown(val, 'accuracy')}")
