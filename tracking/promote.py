"""Promote: move the registry alias ``champion`` to the ``candidate`` model, only if it is better.

Re-scores the current champion and the candidate (the latest mirrored run's model) on the
validation split of the current data, and moves ``champion`` to the candidate only when it is
right on significantly more of those images (McNemar's exact test, one-sided, at
``promote.alpha``) and beats the champion by ``promote.margin`` on ``promote.metric``
(params.yaml). With no champion yet, the candidate becomes the first. The decision, both scores
and the paired test (test, p-value, discordant images, the 95% interval of the difference in
accuracy) go to tags on both versions, to ``metrics/promotion.json`` (commit it: ``dvc metrics
diff`` shows it in review) and to one line of ``metrics/promotion_log.tsv``. Not a DVC stage:
promoting is a decision, not a computation.

    python -m tracking.promote             # decide and act; exit 0 promoted, 1 refused
    python -m tracking.promote --dry-run   # only score and say what it would decide

in: the registry (MLFLOW_TRACKING_URI, else mlflow.db), data/processed/split/val.npz,
    data/processed/classes.json   out: the alias champion, version tags, metrics/promotion.json,
    metrics/promotion_log.tsv   params: promote.metric, promote.margin, promote.alpha
"""
from __future__ import annotations

import argparse

from lifecycle.core.errors import run_stage
from lifecycle.core.params import load_params
from lifecycle.core.schema import PromoteParams
from tracking.gate import (
    REFUSED,
    Decision,
    ValidationSplit,
    decide,
    read_validation_split,
    score_images,
    write_record,
)
from tracking.registry import Registry
from tracking.store import CHAMPION, mlflow_settings

EXIT_REFUSED = 1


def promote(registry: Registry, params: PromoteParams, split: ValidationSplit, dry_run: bool = False) -> Decision | None:
    """Score candidate and champion on ``split`` and decide; unless ``dry_run``, move the alias and tag
    both versions. None when the candidate already is the champion."""
    candidate = registry.candidate()
    champion = registry.version_of(CHAMPION)
    if candidate == champion:
        return None
    scores, correct = score_images(*registry.load(candidate), split, f"candidate v{candidate}")
    candidate_entry = (candidate, scores[params.metric], correct)
    champion_entry = None
    if champion is not None:
        scores, correct = score_images(*registry.load(champion), split, f"champion v{champion}")
        champion_entry = (champion, scores[params.metric], correct)
    decision = decide(params.metric, params.margin, params.alpha, candidate_entry, champion_entry, split)
    if dry_run:
        return decision
    if decision.moves_alias:
        history = registry.history()
        if champion is not None and (not history or history[-1] != champion):
            history.append(champion)  # the alias was set by hand: keep it reachable by a rollback
        registry.move_champion(candidate, [*history, candidate])
    registry.tag([candidate, champion], decision.tags())
    return decision


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tracking.promote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="score and print the decision; move and record nothing")
    args = parser.parse_args(argv)
    params = load_params().promote
    with mlflow_settings():
        registry = Registry.open()
        split = read_validation_split()  # before any model is fetched: a missing file fails fast
        decision = promote(registry, params, split, dry_run=args.dry_run)
        if decision is None:
            print(f"promote: the candidate v{registry.candidate()} already is the champion; nothing to decide")
            return
    if not args.dry_run:
        write_record(decision)
    print(f"promote{' (dry run)' if args.dry_run else ''}: {decision.sentence()}")
    if decision.decision == REFUSED and not args.dry_run:
        raise SystemExit(EXIT_REFUSED)


if __name__ == "__main__":
    run_stage(main)
