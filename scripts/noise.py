"""Beyond noise or within it: the one rule every comparison of two revisions' metrics uses
(``scripts/pr_report.py`` and ``python -m scripts.reproduce_check``).

in: ``dvc metrics diff <a> [<b>] --all --json`` (every metric of both revisions, flattened
keys), read with :func:`metrics_diff`. out: one :class:`Judgement` per headline metric.

A headline metric is a number whose 95% interval sits beside it in the same metrics file,
``<key>_low`` and ``<key>_high`` (:func:`lifecycle.evaluation.interval_keys`: ``evaluate``
writes them for each metric of each split, ``select`` copies the chosen model's). Its change is
within noise when the new value lies inside the reference revision's interval: a value the
reference run itself could have measured on its images by chance. Outside it, the change is
beyond noise; a headline metric the other side lacks is missing. Numbers without an interval
(counts, training curves, p-values) are not judged: they are listed, so nothing is hidden.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lifecycle.core.errors import UserError
from lifecycle.evaluation import interval_keys

WITHIN, BEYOND, MISSING = "within noise", "beyond noise", "missing"

# {metrics file: {flattened key: {"old": value, "new": value, ...}}}, as `dvc metrics diff --all --json` prints it
MetricsDiff = Mapping[str, Mapping[str, Mapping[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Judgement:
    file: str
    key: str
    old: float                # the reference revision's value
    new: float | None         # the other side's; None when it has no such metric
    low: float                # the reference revision's 95% interval
    high: float

    @property
    def verdict(self) -> str:
        if self.new is None:
            return MISSING
        return WITHIN if self.low <= self.new <= self.high else BEYOND

    @property
    def within(self) -> bool:
        return self.verdict == WITHIN


def _number(value: Any) -> float | None:
    return None if isinstance(value, bool) or not isinstance(value, int | float) else float(value)


def judge(diff: MetricsDiff) -> list[Judgement]:
    """A judgement for every metric whose interval the reference revision (``old``) has."""
    judgements = []
    for file, entries in sorted(diff.items()):
        for key, entry in sorted(entries.items()):
            low_key, high_key = interval_keys(key)
            old, low, high = (_number(entries.get(k, {}).get("old")) for k in (key, low_key, high_key))
            if old is None or low is None or high is None:
                continue
            judgements.append(Judgement(file, key, old, _number(entry.get("new")), low, high))
    return judgements


def unjudged_changes(diff: MetricsDiff) -> list[str]:
    """``file:key`` of every number that changed but has no interval to judge it by (intervals themselves excepted)."""
    judged = {(j.file, key) for j in judge(diff) for key in (j.key, *interval_keys(j.key))}
    return [f"{file}:{key}" for file, entries in sorted(diff.items()) for key, entry in sorted(entries.items())
            if (file, key) not in judged and entry.get("old") != entry.get("new")]


def has_intervals(diff: MetricsDiff, side: str) -> bool:
    """Whether ``side`` ("old" or "new") has any metric with its interval."""
    return any(_number(entries.get(high, {}).get(side)) is not None
               for entries in diff.values() for key in entries for high in interval_keys(key)[1:])


def metrics_diff(repo: Path, reference: str, other: str | None = None) -> dict[str, Any]:
    """``dvc metrics diff <reference> [<other>] --all --json`` (default other: the workspace)."""
    args = [sys.executable, "-m", "dvc", "metrics", "diff", reference, *([other] if other else []), "--all", "--json"]
    result = subprocess.run(args, cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip() or f"exit code {result.returncode}").splitlines()[-1]
        raise UserError(f"dvc metrics diff {reference} failed: {message}")
    return json.loads(result.stdout or "{}")


def interval_text(judgement: Judgement) -> str:
    return f"[{judgement.low:.4f}, {judgement.high:.4f}]"
