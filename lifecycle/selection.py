"""Select: the best of the trained models by one metric on the VALIDATION split (never test,
which stays an unbiased report), and whether that choice is beyond noise.

In: evaluate's reports (``{"val": {...}, "test": {...}}`` per model, each metric with its
interval) and, for the paired test, evaluate's validation confusion rows (one row per image,
in the split's order). Out: the chosen model's name, the ``info`` its sidecar carries into
models/best/ (where it came from: the source stage, its validation and test scores, its
params; the service's /metadata reports the scores from there), and metrics/select.json.

Is the choice beyond noise? The chosen model is tested against the runner-up (the best of the
others by the same metric) on the same validation images with McNemar's exact test
(:func:`lifecycle.evaluation.paired_test`). ``best.runner_up`` records the runner-up, the
one-sided p-value, the images exactly one of them gets right, and ``beyond_noise``: whether
the chosen model is right on significantly more images at ``select.alpha``. The choice itself
stays the highest score: a choice within noise is still a choice, but the reader is told.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lifecycle.evaluation import PairedTest, paired_test, score_text

HEADLINE_SPLITS = ("val", "test")  # the chosen model's scores select.json and the sidecar's info carry


def select_best(reports: dict[str, dict[str, Any]], metric: str) -> str:
    """The candidate with the highest validation ``metric`` (ties: the earlier, simpler one; undefined: last)."""
    order = {name: i for i, name in enumerate(reports)}
    value = {name: report["val"][metric] for name, report in reports.items()}
    return max(reports, key=lambda name: (value[name] is not None, value[name] or 0.0, -order[name]))


def runner_up(reports: dict[str, dict[str, Any]], metric: str) -> str | None:
    """The candidate ``select_best`` would choose without the chosen one (None: there is no other)."""
    chosen = select_best(reports, metric)
    others = {name: report for name, report in reports.items() if name != chosen}
    return select_best(others, metric) if others else None


def correct_from_confusion_rows(rows: pd.DataFrame) -> np.ndarray:
    """Per-image correctness from evaluate's confusion rows as written (one row per image, in the split's order)."""
    return (rows["actual"] == rows["predicted"]).to_numpy()


def headline(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """A model's validation and test scores, each metric with its interval, as evaluate reported them."""
    return {split: dict(report[split]) for split in HEADLINE_SPLITS}


def best_model_info(chosen: str, report: dict[str, Any], metric: str, source_info: dict[str, Any]) -> dict[str, Any]:
    """The ``info`` of models/best/'s sidecar: the source stage, how it was chosen, its validation
    and test scores (what /metadata reports) and the source's params and training record."""
    return {
        "source": chosen,
        "selected_by": f"val.{metric}",
        **headline(report),
        "params": source_info.get("params", {}),
        "training": {k: v for k, v in source_info.items() if k != "params"},
    }


def compare_with_runner_up(chosen: str, second: str, validation_rows: dict[str, pd.DataFrame],
                           alpha: float) -> tuple[dict[str, Any], PairedTest]:
    """``best.runner_up`` of metrics/select.json, and the paired test behind it: the chosen model
    against ``second`` on the same validation images (``validation_rows``: each one's confusion rows)."""
    test = paired_test(correct_from_confusion_rows(validation_rows[chosen]),
                       correct_from_confusion_rows(validation_rows[second]))
    against = {"model": second, "paired_test": test.TEST, "p_value": round(test.p_value, 6),
               "discordant": test.discordant, "beyond_noise": test.better(alpha)}
    return against, test


def selection_metrics(chosen: str, report: dict[str, Any], against: dict[str, Any]) -> dict[str, Any]:
    """metrics/select.json: under ``best`` (a name no other metrics file uses, so ``dvc exp show``
    heads these columns ``best.test.accuracy``) the model, its scores and the paired test. The
    candidates' own scores are in metrics/evaluate/ and select.metric in params.yaml: repeating
    them here would only add columns to ``dvc exp show``."""
    return {"best": {"model": chosen, **headline(report), "runner_up": against}}


def selection_summary(reports: dict[str, dict[str, Any]], chosen: str, metric: str, alpha: float,
                      against: dict[str, Any], test: PairedTest) -> str:
    """The line select prints: every candidate's score, and the paired test's verdict."""
    candidates = {name: report["val"][metric] for name, report in reports.items()}
    verdict = "beyond noise" if against["beyond_noise"] else "within noise"
    return (f"select: {chosen} (val {metric} {score_text(candidates[chosen])}; "
            + ", ".join(f"{n} {score_text(v)}" for n, v in candidates.items()) + f"); against {against['model']} on the same "
            f"{test.images} validation images: right on {test.a_only} it misses, wrong on {test.b_only} it gets, "
            f"McNemar p={test.p_value:.3g}: {verdict} at alpha {alpha:g}")
