"""The promotion gate: re-score the champion and the candidate on one validation split, decide,
and record the decision where review sees it. No MLflow here (:mod:`tracking.registry` fetches
the models and moves the alias).

in: two registered models (callables and their sidecars), the validation split of the current
data (``data/processed/split/val.npz``, the one ``select`` chooses on), ``promote.metric`` and
``promote.margin``.
out: a :class:`Decision`, and its record: ``metrics/promotion.json`` (the last decision, which
``dvc metrics diff`` shows) and one line appended to ``metrics/promotion_log.tsv`` (every
decision, oldest first).

Both models go through :func:`lifecycle.models.class_probabilities` and
:func:`lifecycle.evaluation.classification_metrics`, the forward path and the metrics
``evaluate`` and ``select`` use, on the same images: a score here is comparable with the
validation scores in metrics/evaluate/ and with the other model's score.
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
from lifecycle.evaluation import METRIC_NAMES, classification_metrics
from lifecycle.models import ModelSpec, class_probabilities

PROMOTED = "promoted"              # the candidate beat the champion by the margin: it is the champion now
REFUSED = "refused"                # it did not: the champion stays
FIRST_CHAMPION = "first_champion"  # there was no champion: the candidate became the first
ROLLED_BACK = "rolled_back"        # python -m tracking.rollback moved the champion back
LOG_COLUMNS = ("at", "action", "decision", "metric", "margin", "champion_version", "champion_score",
               "candidate_version", "candidate_score", "champion_after", "split_sha256", "split_images")


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
    return {metric: float(metrics[metric]) for metric in METRIC_NAMES}


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
        relation = "at least" if self.decision == PROMOTED else "less than"
        return (f"{verb}: candidate {candidate} vs champion {champion} on {self.split_images()} validation "
                f"images: {gain:+.4f}, {relation} the margin {self.margin:g}; champion is v{self.champion_after}")

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
        }

    def log_line(self) -> str:
        values = {
            "at": self.at, "action": self.action, "decision": self.decision, "metric": self.metric,
            "margin": f"{self.margin:g}", "champion_version": _text(self.champion_version),
            "champion_score": _text(self.champion_score), "candidate_version": str(self.candidate_version),
            "candidate_score": _text(self.candidate_score), "champion_after": str(self.champion_after),
            "split_sha256": self.split["sha256"] if self.split else "",
            "split_images": str(self.split["images"]) if self.split else "",
        }
        return "\t".join(values[column] for column in LOG_COLUMNS) + "\n"


def _text(value: float | None) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6f}"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def decide(
    metric: str,
    margin: float,
    candidate: tuple[int, float],
    champion: tuple[int, float] | None,
    split: ValidationSplit,
    at: str | None = None,
) -> Decision:
    """Promote ``candidate`` (version, score) if there is no champion, or if it beats the champion's
    score by at least ``margin``; otherwise keep the champion."""
    candidate_version, candidate_score = candidate
    common = {"action": "promote", "metric": metric, "margin": margin, "candidate_version": candidate_version,
              "candidate_score": candidate_score, "split": split.describe(), "at": at or now()}
    if champion is None:
        return Decision(decision=FIRST_CHAMPION, champion_version=None, champion_score=None,
                        champion_after=candidate_version, **common)
    champion_version, champion_score = champion
    # Rounded: 0.88 - 0.875 is 0.0050000000000000044 in floating point, and a margin is meant as written.
    better = round(candidate_score - champion_score, 9) >= margin
    return Decision(decision=PROMOTED if better else REFUSED, champion_version=champion_version,
                    champion_score=champion_score, champion_after=candidate_version if better else champion_version,
                    **common)


def write_record(decision: Decision, record: Path = paths.PROMOTION_RECORD, log: Path = paths.PROMOTION_LOG) -> None:
    """Replace the last-decision file and append one line to the log (both written atomically)."""
    write_json_atomic(decision.record(), record)
    header = "\t".join(LOG_COLUMNS) + "\n"
    lines = Path(log).read_text() if Path(log).is_file() else header
    write_bytes_atomic((lines + decision.log_line()).encode(), log)
