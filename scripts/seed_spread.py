"""How much each headline metric moves with the models' seed alone: mean, standard deviation, range.

    dvc exp run --queue -S 'model_seed=range(1,6)'   # five experiments; the data (seed) stays fixed
    dvc queue start -j 1 && dvc queue status           # ... wait until they finish
    python -m scripts.seed_spread                      # the spread over HEAD's experiments, one row per metric
    python -m scripts.seed_spread --rev 18d4a3c        # ... over another commit's (experiments hang off the commit they ran from)

Reads the experiments of ``HEAD`` (``dvc.api.exp_show``), keeps those whose params differ from
the baseline's in ``model_seed`` alone (a sweep of anything else would mix its effect into
the spread), one per seed, the baseline included, and summarises every headline metric:
the scores of each model on each split (``metrics/evaluate/<model>.json``) and of the selected
one (``best.*``). The 95% intervals beside each metric (``*_low``, ``*_high``) are the noise of
one split's images; this is the noise of training, which they do not include.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Iterable
from typing import Any

SEED = "model_seed"
HEADLINE = ("accuracy", "precision", "recall", "f1", "roc_auc")


def is_headline(column: str) -> bool:
    """``metrics/evaluate/train.json:val.accuracy`` or ``best.test.f1``: yes; intervals, counts: no."""
    return column.rsplit(".", 1)[-1] in HEADLINE and (column.startswith("metrics/evaluate/") or
                                                      column.startswith(("best.", "metrics/select.json:best.")))


def seed_runs(rows: list[dict[str, Any]], params: set[str]) -> dict[int, dict[str, Any]]:
    """One finished run per ``model_seed`` among the baseline and the experiments that differ
    from it in ``model_seed`` alone (``params``: the param columns, ``lr``, ``train.channels``)."""
    baselines = [row for row in rows if row.get("typ") == "baseline"]
    if not baselines:
        raise SystemExit("error: no baseline among the experiments (run this inside the repository, at a commit).")
    baseline = baselines[0]
    others = sorted(params - {SEED})
    runs: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row.get("typ") not in ("baseline", "branch_commit", "branch_base") or row.get(SEED) is None:
            continue
        if row.get("State") not in (None, "Success"):
            continue  # queued, running or failed: no metrics to summarise yet
        if any(row.get(name) != baseline.get(name) for name in others):
            continue  # another param changed too: not a seed sweep
        runs.setdefault(int(row[SEED]), row)
    return runs


def param_columns(document: dict[str, Any], prefix: str = "") -> set[str]:
    """``params.yaml``'s keys as `dvc exp show` names its columns (``train.channels``)."""
    names: set[str] = set()
    for key, value in document.items():
        if isinstance(value, dict) and value:
            names |= param_columns(value, f"{prefix}{key}.")
        else:
            names.add(f"{prefix}{key}")
    return names


def spread(runs: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per headline metric: the number of seeds, mean, standard deviation (n-1), min and max."""
    columns = sorted({column for row in runs.values() for column in row if is_headline(column)})
    table = []
    for column in columns:
        values = [float(row[column]) for row in runs.values() if _number(row.get(column))]
        if len(values) < 2:
            continue
        table.append({"metric": label(column), "seeds": len(values),
                      "mean": statistics.fmean(values), "std": statistics.stdev(values),
                      "min": min(values), "max": max(values)})
    return table


def label(column: str) -> str:
    """``metrics/evaluate/train.json:val.accuracy`` -> ``train val.accuracy``; ``best.val.f1`` stays."""
    return column.removeprefix("metrics/select.json:").removeprefix("metrics/evaluate/").replace(".json:", " ")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def markdown(table: Iterable[dict[str, Any]], seeds: list[int]) -> str:
    lines = [f"model_seed: {', '.join(map(str, seeds))}", "",
             "| metric | seeds | mean | std | min | max |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {row['metric']} | {row['seeds']} | {row['mean']:.4f} | {row['std']:.4f} | {row['min']:.4f} | "
              f"{row['max']:.4f} |" for row in table]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.seed_spread", description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the commit the sweep's experiments were run from (default HEAD)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args(argv)
    import dvc.api  # here: --help needs no DVC
    import yaml

    from lifecycle.core.paths import PARAMS

    runs = seed_runs(dvc.api.exp_show(revs=args.rev), param_columns(yaml.safe_load(PARAMS.read_text())))
    if len(runs) < 2:
        print(f"error: {len(runs)} run(s) differing only by {SEED}; queue a sweep first: "
              f"dvc exp run --queue -S '{SEED}=range(1,6)' && dvc queue start", file=sys.stderr)
        raise SystemExit(2)
    table = spread(runs)
    print(json.dumps({"model_seed": sorted(runs), "metrics": table}, indent=2) if args.json
          else markdown(table, sorted(runs)))


if __name__ == "__main__":
    main()
