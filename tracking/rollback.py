"""Rollback: move the registry alias ``champion`` back to the version that held it before.

Steps back through the champion's history (the registered model's tag ``champion.history``,
kept by ``python -m tracking.promote``), skipping versions deleted since. It does not gate:
a rollback is what you do when the champion misbehaves in production. Both versions are
re-scored on the current validation split when it is there, for the record only; the
decision goes to tags on both versions, ``metrics/promotion.json`` and one line of
``metrics/promotion_log.tsv``, as a promotion's does.

    python -m tracking.rollback

in: the registry (MLFLOW_TRACKING_URI, else mlflow.db), data/processed/split/val.npz if present
out: the alias champion, its history, version tags, metrics/promotion.json, metrics/promotion_log.tsv
params: promote.metric (the score recorded)
"""
from __future__ import annotations

import argparse
import sys

from lifecycle.core.errors import UserError, run_stage
from lifecycle.core.params import load_params
from lifecycle.core.schema import PromoteParams
from tracking.gate import (
    ROLLED_BACK,
    Decision,
    ValidationSplit,
    now,
    read_validation_split,
    score,
    write_record,
)
from tracking.registry import HISTORY_TAG, Registry
from tracking.store import CHAMPION, REGISTERED_MODEL, mlflow_settings


def rollback(registry: Registry, params: PromoteParams, split: ValidationSplit | None) -> Decision:
    """Move champion to the previous champion and tag both versions; scores on ``split`` if given."""
    current = registry.version_of(CHAMPION)
    if current is None:
        raise UserError(f"'{REGISTERED_MODEL}' in the MLflow registry at {registry.shown} has no '{CHAMPION}' "
                        f"to roll back; promote one first (python -m tracking.promote).")
    history = registry.history()
    while history and (history[-1] == current or not registry.exists(history[-1])):
        history.pop()
    if not history:
        raise UserError(f"champion v{current} has no earlier champion to roll back to (the registered model's "
                        f"tag {HISTORY_TAG} lists none that still exists).")
    previous = history[-1]
    scores: dict[int, float | None] = {current: None, previous: None}
    if split is not None:
        try:  # the record's scores: welcome, but a rollback must not wait for them
            for version in scores:
                scores[version] = score(*registry.load(version), split, f"v{version}")[params.metric]
        except UserError as reason:
            split, scores = None, {current: None, previous: None}
            print(f"rollback: not re-scored ({reason})", file=sys.stderr)
    decision = Decision(
        action="rollback", decision=ROLLED_BACK, metric=params.metric, margin=params.margin,
        champion_version=current, champion_score=scores[current], candidate_version=previous,
        candidate_score=scores[previous], champion_after=previous,
        split=split.describe() if split else None, at=now(),
    )
    registry.move_champion(previous, history)
    registry.tag([current, previous], decision.tags())
    return decision


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tracking.rollback", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    params = load_params().promote
    with mlflow_settings():
        registry = Registry.open()
        try:
            split = read_validation_split()
        except UserError as reason:
            split = None
            print(f"rollback: not re-scored ({reason})", file=sys.stderr)
        decision = rollback(registry, params, split)
    write_record(decision)
    print(f"rollback: {decision.sentence()}")


if __name__ == "__main__":
    run_stage(main)
