"""Drift: are the images a model is asked about still like the ones it was validated on?

Pure functions over arrays; the ``monitor`` stage reads the prediction log and the
references, calls :func:`judge` once per model version, and writes what it returns.

- Each served image is described as the prediction log records it
  (:mod:`lifecycle.prediction_log`): a few statistics (brightness, contrast, colour means) and
  the model's penultimate-layer embedding, reduced to 16 numbers by a fixed random projection.
  The reference is the same description of the validation split, made with the same model.
- Per statistic: the two-sample Kolmogorov-Smirnov test (scipy); a statistic drifted when its
  p-value is below ``alpha`` divided by the number of statistics (Bonferroni).
- The embeddings together: a domain classifier (scikit-learn's logistic regression,
  cross-validated) tries to tell served images from reference ones; its ROC AUC is the drift
  score, 0.5 when it cannot (Evidently's method for embeddings). Drift when it passes
  ``auc_threshold``.
- Fewer than ``min_images`` served images: no verdict (``"insufficient"``), never a false alarm.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from lifecycle.prediction_log import STATISTICS


@dataclasses.dataclass(frozen=True)
class Thresholds:
    alpha: float = 0.01          # family-wise level of the per-statistic tests
    auc_threshold: float = 0.6   # the domain classifier's ROC AUC above which embeddings drifted
    min_images: int = 30         # below this many served images, no verdict


def statistic_drift(reference: Mapping[str, np.ndarray], served: Mapping[str, np.ndarray],
                    alpha: float) -> list[dict[str, Any]]:
    """A two-sample KS test per statistic, Bonferroni-corrected."""
    from scipy.stats import ks_2samp

    names = [name for name in STATISTICS if name in reference and name in served]
    tests = []
    for name in names:
        result = ks_2samp(np.asarray(reference[name], dtype=np.float64), np.asarray(served[name], dtype=np.float64))
        tests.append({"statistic": name, "ks": float(result.statistic), "p_value": float(result.pvalue),
                      "drifted": bool(result.pvalue < alpha / len(names)),
                      "reference_mean": float(np.mean(reference[name])), "served_mean": float(np.mean(served[name]))})
    return tests


def embedding_drift(reference: np.ndarray, served: np.ndarray, seed: int = 0) -> float:
    """ROC AUC of a cross-validated classifier telling served embeddings from reference ones (0.5: alike)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    inputs = np.concatenate([reference, served]).astype(np.float64)
    is_served = np.concatenate([np.zeros(len(reference)), np.ones(len(served))])
    folds = StratifiedKFold(n_splits=min(5, len(reference), len(served)), shuffle=True, random_state=seed)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))
    scores = cross_val_predict(classifier, inputs, is_served, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(is_served, scores))


def judge(reference: Mapping[str, np.ndarray], served: Mapping[str, np.ndarray], thresholds: Thresholds,
          seed: int = 0) -> dict[str, Any]:
    """The verdict for one model version: ``drift``, ``no_drift`` or ``insufficient``, with every test.

    ``reference`` and ``served`` map each of :data:`STATISTICS` and ``"embedding"`` ((N, dims))
    to arrays; a side without embeddings (or with another width) is judged on its statistics.
    """
    count = len(served[STATISTICS[0]])
    result: dict[str, Any] = {"images": int(count), "reference_images": int(len(reference[STATISTICS[0]]))}
    if count < thresholds.min_images:
        return {**result, "verdict": "insufficient", "drifted": False,
                "reason": f"{count} served images, fewer than monitor.min_images ({thresholds.min_images})"}
    tests = statistic_drift(reference, served, thresholds.alpha)
    result["statistics"] = tests
    drifted = [test["statistic"] for test in tests if test["drifted"]]
    embedded = "embedding" in reference and "embedding" in served
    if embedded and np.shape(reference["embedding"])[1:] == np.shape(served["embedding"])[1:]:
        auc = embedding_drift(np.asarray(reference["embedding"]), np.asarray(served["embedding"]), seed)
        result["embedding"] = {"auc": auc, "threshold": thresholds.auc_threshold,
                               "drifted": bool(auc > thresholds.auc_threshold)}
        if auc > thresholds.auc_threshold:
            drifted.append("embedding")
    result["drifted_features"] = drifted
    result["drifted"] = bool(drifted)
    result["verdict"] = "drift" if drifted else "no_drift"
    return result


# ----------------------------------------------------------------------------- the monitor stage's logic

def version_key(model: Mapping[str, Any]) -> str:
    """How a record's model is named in the report: ``<name> <version>``."""
    return f"{model.get('name', '?')} {model.get('version', '?')}"


def served_description(records: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The statistics (and, when every record has one of one width, the embeddings) of logged records."""
    found = {name: np.array([float(r["statistics"][name]) for r in records]) for name in STATISTICS}
    embeddings = [r.get("embedding") for r in records]
    if embeddings and all(e is not None for e in embeddings) and len({len(e) for e in embeddings}) == 1:
        found["embedding"] = np.array(embeddings, dtype=np.float32)
    return found


def by_version(records: list[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Records grouped by the model version that answered them, in order of first appearance."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        if isinstance(record.get("model"), Mapping) and isinstance(record.get("statistics"), Mapping):
            groups.setdefault(version_key(record["model"]), []).append(record)
    return groups


def class_ratio_over_time(records: list[Mapping[str, Any]], classes: list[str], bucket: str) -> list[dict[str, Any]]:
    """Per time bucket (``hour``: ``2026-12-06T08``, ``day``: ``2026-12-06``): images and each class's share."""
    width = {"hour": 13, "day": 10}[bucket]
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        when = str(record.get("time", ""))[:width]
        if when:
            row = counts.setdefault(when, dict.fromkeys(classes, 0))
            if record.get("label") in row:
                row[record["label"]] += 1
    rows = []
    for when in sorted(counts):
        total = sum(counts[when].values())
        rows.append({"time": when, "images": total,
                     **{name: round(count / total, 6) if total else 0.0 for name, count in counts[when].items()}})
    return rows
