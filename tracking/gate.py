"""The promotion gate: re-score the champion and the candidate on one validation split, decide,
and record the decision where review sees it. No MLflow here (:mod:`tracking.registry` fetches
the models and moves the alias).

in: two registered models (callables and their sidecars), the validation split of the current
data (``data/processed/split/val.npz``, the one ``select`` chooses on), ``promote.metric``,
``promote.margin`` and ``promote.alpha``.
out: a :class:`Decision`, and its record: ``metrics/promotion.json`` (the last decision, which
``dvc metrics diff`` shows) and one line appended to ``metrics/promotion_log.tsv`` (every
decision, oldest first).

Both models go through :func:`lifecycle.models.class_probabilities` and
:func:`lifecycle.evaluation.classification_metrics`, the forward path and the metrics
``evaluate`` and ``select`` use, on the same images: a score here is comparable with the
validation scores in metrics/evaluate/ and with the other model's score.

A higher score alone is not evidence: on 286 images the standard error of an accuracy near 0.9
is about 0.017, and two trainings that differ only by seed move it by that much. So the
candidate is promoted only when it is right on significantly more of the same images than the
champion, by McNemar's exact test on the images exactly one of them gets right
(:func:`lifecycle.evaluation.paired_test`, one-sided, at ``promote.alpha``), and when its
``promote.metric`` also beats the champion's by ``promote.margin`` (0 to rely on the test
alone). The test is of per-image correctness whatever ``promote.metric`` is: precision, F1 and
ROC AUC are not sums over images that a pair of models can be compared on image by image.
The decision records the test, its p-value, the 95% interval of the paired difference in
accuracy and the number of discordant images.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lifecycle.core import paths
from lifecycle.core.errors import UserError
from lifecycle.core.io import (
    read_arrays,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
)
from lifecycle.evaluation import (
    METRIC_NAMES,
    PairedTest,
    classification_metrics,
    correct_per_image,
    paired_test,
)
from lifecycle.models import ModelSpec, class_probabilities

PROMOTED = "promoted"              # the candidate beat the champion significantly and by the margin: champion now
REFUSED = "refused"                # it did not: the champion stays
FIRST_CHAMPION = "first_champion"  # there was no champion: the candidate became the first
ROLLED_BACK = "rolled_back"        # python -m tracking.rollback moved the champion back
LOG_COLUMNS = ("at", "action", "decision", "metric", "margin", "champion_version", "champion_score",
               "candidate_version", "candidate_score", "champion_after", "split_sha256", "split_images",
               "alpha", "test", "p_value", "discordant", "difference", "difference_low", "difference_high")


@dataclasses.dataclass(frozen=True)
class ValidationSplit:
    """The images both models are scored on, their labels, class names, and the file's digest."""

    images: np.ndarray      # uint8 (N, S, S, 3)
    labels: np.ndarray      # int (N,), indices into classes
    classes: list[str]
    sha256: str             # of the .npz file: which data a decision was made on

    def describe(self) -> dict[str, Any]:
        return {"path": paths.relative(paths.VAL), "sha256": self.sha256, "images": len(self.labels)}


def read_validation_split(path: Path = paths.VAL, classes_file: Path = paths.CLASSES) -> ValidationSplit:
    """The current data's validation split, or a UserError naming the missing file."""
    for needed in (path, classes_file):
        if not Path(needed).is_file():
            raise UserError(
                f"{paths.relative(needed)} does not exist; the gate scores both models on the current "
                f"validation split, so run dvc repro split (or dvc pull) first."
            )
    arrays = read_arrays(path)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return ValidationSplit(arrays["images"], arrays["labels"], list(read_json(classes_file)["classes"]), digest)


def score(model: Callable[..., Any], spec: ModelSpec, split: ValidationSplit, name: str) -> dict[str, float]:
    """Every headline metric of ``model`` on ``split`` (``name`` says which model in an error)."""
    return score_images(model, spec, split, name)[0]


def score_images(model: Callable[..., Any], spec: ModelSpec, split: ValidationSplit,
                 name: str) -> tuple[dict[str, float], np.ndarray]:
    """:func:`score`, and whether ``model`` is right about each image of ``split`` (for the paired test)."""
    side = split.images.shape[1]
    if spec.image_size != side:
        raise UserError(
            f"{name} takes {spec.image_size}-pixel images but {paths.relative(paths.VAL)} holds {side}-pixel ones "
            f"(featurize.image_size changed since it was trained), so the two models cannot be scored on the same "
            f"images; promote by hand with mlflow if you mean to."
        )
    if list(spec.classes) != split.classes:
        raise UserError(
            f"{name} answers classes {list(spec.classes)} but the current data has {split.classes} "
            f"({paths.relative(paths.CLASSES)}), so its scores on this split would mean nothing."
        )
    probabilities = class_probabilities(model, split.images, spec)
    metrics = classification_metrics(split.labels, probabilities, split.classes)
    return {metric: float(metrics[metric]) for metric in METRIC_NAMES}, correct_per_image(split.labels, probabilities)


@dataclasses.dataclass(frozen=True)
class Decision:
    """One promotion or rollback: which versions, their scores, what happened and why."""

    action: str                      # promote | rollback
    decision: str                    # PROMOTED, REFUSED, FIRST_CHAMPION or ROLLED_BACK
    metric: str
    margin: float
    champion_version: int | None     # the champion before the command (None: there was none)
    champion_score: float | None
    candidate_version: int           # promote: the candidate; rollback: the version restored
    candidate_score: float | None
    champion_after: int              # the version the alias champion points at afterwards
    split: Mapping[str, Any] | None  # ValidationSplit.describe(), or None when no split was scored
    at: str                          # UTC, ISO 8601, seconds
    alpha: float | None = None       # promote.alpha (None: a rollback, or no champion to test against)
    paired: PairedTest | None = None  # candidate against champion on the same images (None: likewise)

    @property
    def moves_alias(self) -> bool:
        return self.champion_after != self.champion_version

    def sentence(self) -> str:
        """The decision as one line for the terminal."""
        def shown(version: int | None, value: float | None) -> str:
            return f"v{version}" + ("" if value is None else f" ({self.metric} {value:.4f})")

        champion = shown(self.champion_version, self.champion_score)
        candidate = shown(self.candidate_version, self.candidate_score)
        if self.decision == FIRST_CHAMPION:
            return f"promoted: {candidate} is the first champion"
        if self.decision == ROLLED_BACK:
            return f"rolled back: champion {champion} -> {candidate}"
        gain = (self.candidate_score or 0.0) - (self.champion_score or 0.0)
        verb = "promoted" if self.decision == PROMOTED else "refused"
        relation = "at least" if self.margin_met else "less than"
        test = self.paired
        if test is None:
            evidence = "no paired test"
        else:
            beyond = "beyond noise" if self.significant else "within noise"
            below = "<" if self.significant else ">="
            evidence = (f"right on {test.a_only} images the champion misses, wrong on {test.b_only} it gets right "
                        f"(McNemar exact p={test.p_value:.3g} {below} alpha {self.alpha:g}: {beyond}; accuracy "
                        f"difference {test.difference:+.4f}, 95% [{test.difference_low:+.4f}, {test.difference_high:+.4f}])")
        return (f"{verb}: candidate {candidate} vs champion {champion} on {self.split_images()} validation "
                f"images: {gain:+.4f}, {relation} the margin {self.margin:g}; {evidence}; champion is v{self.champion_after}")

    @property
    def margin_met(self) -> bool:
        # Rounded: 0.88 - 0.875 is 0.0050000000000000044 in floating point, and a margin is meant as written.
        return round((self.candidate_score or 0.0) - (self.champion_score or 0.0), 9) >= self.margin

    @property
    def significant(self) -> bool:
        return self.paired is not None and self.alpha is not None and self.paired.better(self.alpha)

    def evidence(self) -> dict[str, Any]:
        """The paired test as recorded: test, p-value, discordant images, the difference and its interval."""
        test = self.paired
        if test is None:
            return {key: None for key in ("test", "p_value", "discordant", "difference", "difference_low",
                                          "difference_high")}
        return {"test": test.TEST, "p_value": test.p_value, "discordant": test.discordant,
                "difference": test.difference, "difference_low": test.difference_low,
                "difference_high": test.difference_high}

    def split_images(self) -> int | str:
        return self.split["images"] if self.split else "?"

    def tags(self) -> dict[str, str]:
        """The decision as model version tags (``promotion.*`` or ``rollback.*``), the same on both versions."""
        prefix = "promotion" if self.action == "promote" else "rollback"
        values = {
            "decision": self.decision,
            "metric": self.metric,
            "margin": f"{self.margin:g}",
            "champion_version": "" if self.champion_version is None else str(self.champion_version),
            "champion_score": _text(self.champion_score),
            "candidate_version": str(self.candidate_version),
            "candidate_score": _text(self.candidate_score),
            "champion_after": str(self.champion_after),
            "split_sha256": self.split["sha256"] if self.split else "",
            "at": self.at,
            "alpha": "" if self.alpha is None else f"{self.alpha:g}",
            **{key: _text(value) if not isinstance(value, str) else value for key, value in self.evidence().items()},
        }
        return {f"{prefix}.{key}": value for key, value in values.items()}

    def record(self) -> dict[str, Any]:
        """metrics/promotion.json: the scores under the metric's own name, so a diff reads ``candidate.accuracy``."""
        return {
            "action": self.action,
            "decision": self.decision,
            "metric": self.metric,
            "margin": self.margin,
            "champion": {"version": self.champion_version, self.metric: self.champion_score},
            "candidate": {"version": self.candidate_version, self.metric: self.candidate_score},
            "champion_after": self.champion_after,
            "split": dict(self.split) if self.split else None,
            "at": self.at,
            "alpha": self.alpha,
            "paired": None if self.paired is None else {key: _rounded(value) for key, value in self.evidence().items()},
        }

    def log_line(self) -> str:
        values = {
            "at": self.at, "action": self.action, "decision": self.decision, "metric": self.metric,
            "margin": f"{self.margin:g}", "champion_version": _text(self.champion_version),
            "champion_score": _text(self.champion_score), "candidate_version": str(self.candidate_version),
            "candidate_score": _text(self.candidate_score), "champion_after": str(self.champion_after),
            "split_sha256": self.split["sha256"] if self.split else "",
            "split_images": str(self.split["images"]) if self.split else "",
            "alpha": "" if self.alpha is None else f"{self.alpha:g}",
            **{key: _text(value) if not isinstance(value, str) else value for key, value in self.evidence().items()},
        }
        return "\t".join(values[column] for column in LOG_COLUMNS) + "\n"


def _text(value: float | None) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6g}" if 0 < abs(value) < 1e-4 else f"{value:.6f}"


def _rounded(value: Any) -> Any:
    """Six significant digits for a float (a p-value may be 1e-12), the value itself otherwise."""
    return float(f"{value:.6g}") if isinstance(value, float) else value


def now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def decide(
    metric: str,
    margin: float,
    alpha: float,
    candidate: tuple[int, float, np.ndarray],
    champion: tuple[int, float, np.ndarray] | None,
    split: ValidationSplit,
    at: str | None = None,
) -> Decision:
    """Promote ``candidate`` (version, score, per-image correctness) if there is no champion, or if
    it is right on significantly more images than the champion (McNemar's exact test at ``alpha``)
    and beats the champion's score by at least ``margin``; otherwise keep the champion."""
    candidate_version, candidate_score, candidate_correct = candidate
    common = {"action": "promote", "metric": metric, "margin": margin, "candidate_version": candidate_version,
              "candidate_score": candidate_score, "split": split.describe(), "at": at or now()}
    if champion is None:
        return Decision(decision=FIRST_CHAMPION, champion_version=None, champion_score=None,
                        champion_after=candidate_version, **common)
    champion_version, champion_score, champion_correct = champion
    test = paired_test(candidate_correct, champion_correct)
    weighed = Decision(decision=REFUSED, champion_version=champion_version, champion_score=champion_score,
                       champion_after=champion_version, alpha=alpha, paired=test, **common)
    if weighed.significant and weighed.margin_met:
        return dataclasses.replace(weighed, decision=PROMOTED, champion_after=candidate_version)
    return weighed


def write_record(decision: Decision, record: Path = paths.PROMOTION_RECORD, log: Path = paths.PROMOTION_LOG) -> None:
    """Replace the last-decision file and append one line to the log (both written atomically).

    A log written before a column was added keeps its lines, under the current header, with an
    empty cell for each column they did not have."""
    write_json_atomic(decision.record(), record)
    header = "\t".join(LOG_COLUMNS) + "\n"
    lines = _under_current_header(Path(log).read_text()) if Path(log).is_file() else header
    write_bytes_atomic((lines + decision.log_line()).encode(), log)


def _under_current_header(text: str) -> str:
    rows = text.splitlines()
    if not rows or rows[0].split("\t") == list(LOG_COLUMNS):
        return text
    old = rows[0].split("\t")
    lines = ["\t".join(LOG_COLUMNS)]
    for row in rows[1:]:
        cells = dict(zip(old, row.split("\t")))
        lines.append("\t".join(cells.get(column, "") for column in LOG_COLUMNS))
    return "\n".join(lines) + "\n"
