"""The metrics files hold the headline a reviewer compares, not the bulk behind it.

Every scalar in a declared metrics file is one column of `dvc exp show` and one row of
`dvc metrics diff`. Per-class, per-reason and per-spelling counts and confusion-matrix cells
made that table 346 columns wide; they live in plots/ (tables DVC draws) and reports/ now.
These checks read the committed files (fast) and are reused on a fresh pipeline run by the
slow tests (tests/test_model_pipeline.py), so the bulk cannot creep back by either path.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

# Scalars over all metrics files: 189 before the breakdowns moved out, 103 after; then raised
# on purpose for issue 17 ("numbers carry their noise"): every headline metric of every split
# got its 95% interval beside it (<metric>_low, <metric>_high: 3 columns where there was 1, so
# 30 per metrics/evaluate file, 36 in select.json with the paired test against the runner-up),
# and the promotion record its paired test, about 195 in all after a pipeline run
# (`python -m pytest tests/test_metrics_columns.py -s` prints the count). An interval is a
# scalar because `dvc exp show` hides lists, and it belongs beside its number in review. A new
# headline or two still fits; a new breakdown (two classes x a few splits x a few models) does
# not, and BULK_WORDS below catches one by name whatever the count.
MAX_METRIC_KEYS = 200
MAX_KEYS_PER_FILE = 36
# Words that name a breakdown, not a headline.
BULK_WORDS = re.compile(r"confusion|class_counts|by_reason|spelling|intensity|formats|modes|candidates_val")


def declared_metrics(root: Path) -> list[str]:
    """Every metrics file dvc.yaml declares (stage ``metrics:``, foreach expanded, and top-level)."""
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    found = list(pipeline.get("metrics") or [])
    for stage in pipeline["stages"].values():
        items = stage.get("foreach", [None])
        body = stage.get("do", stage)
        for item in items:
            for entry in body.get("metrics") or []:
                name = next(iter(entry)) if isinstance(entry, Mapping) else entry
                found.append(name.replace("${item}", str(item)))
    return sorted(found)


def scalar_keys(document: Any, prefix: str = "") -> Iterator[str]:
    """Flattened keys of the scalars `dvc exp show` makes columns of (lists are not shown)."""
    if isinstance(document, Mapping):
        for key, value in document.items():
            yield from scalar_keys(value, f"{prefix}{key}.")
    elif not isinstance(document, list):
        yield prefix.rstrip(".")


def metric_keys(root: Path) -> dict[str, list[str]]:
    """Metrics file -> its flattened scalar keys, for the files present under ``root``."""
    return {name: list(scalar_keys(json.loads((root / name).read_text())))
            for name in declared_metrics(root) if (root / name).is_file()}


def headline_problems(root: Path) -> list[str]:
    """Why the metrics files under ``root`` are not a headline; empty when they are."""
    keys = metric_keys(root)
    classes = set(yaml.safe_load((root / "params.yaml").read_text())["preprocess"]["classes"])
    problems = []
    total = sum(len(names) for names in keys.values())
    if total > MAX_METRIC_KEYS:
        problems.append(f"{total} metric keys, more than {MAX_METRIC_KEYS}")
    for name, names in keys.items():
        if len(names) > MAX_KEYS_PER_FILE:
            problems.append(f"{name}: {len(names)} keys, more than {MAX_KEYS_PER_FILE}")
        for key in names:
            if BULK_WORDS.search(key) or classes & set(key.split(".")):
                problems.append(f"{name}: {key} is a breakdown (per class, reason or spelling), not a headline")
    return problems


def test_the_committed_metrics_are_a_headline():
    keys = metric_keys(ROOT)
    print(f"{sum(len(names) for names in keys.values())} metric keys in {len(keys)} files")
    assert len(keys) == len(declared_metrics(ROOT))  # every declared metrics file is committed
    assert headline_problems(ROOT) == []


def test_metrics_hold_no_file_that_is_not_a_declared_metric():
    """metrics/ is what `dvc metrics` reads; tables and reports belong in plots/ and reports/."""
    declared = set(declared_metrics(ROOT))
    curves = {f"metrics/{stage}/plots" for stage in ("pretrain", "train", "finetune", "transfer")}  # DVCLive's folders
    strays = [path.relative_to(ROOT).as_posix() for path in sorted((ROOT / "metrics").rglob("*"))
              if path.is_file() and path.relative_to(ROOT).as_posix() not in declared
              and not any(path.relative_to(ROOT).as_posix().startswith(f"{curve}/") for curve in curves)
              and path.name != "promotion_log.tsv"]  # the gate's every decision, beside metrics/promotion.json
    assert strays == []


@pytest.mark.parametrize("bulk", [
    {"metrics/split.json": {"train": {"images": 10, "class_counts": {"cat": 7, "dog": 3}}}},
    {"metrics/evaluate/train.json": {"test": {"accuracy": 0.9, "confusion_matrix": {"cat": {"cat": 1}}}}},
    {"metrics/predict.json": {"files": 3, "labels": {"cat": 2, "dog": 1}}},
    {"metrics/synthesize.json": {f"extra_{i}": i for i in range(MAX_KEYS_PER_FILE + 1)}},
])
def test_a_breakdown_in_a_metrics_file_is_caught(tmp_path, bulk):
    (tmp_path / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    (tmp_path / "dvc.yaml").write_bytes((ROOT / "dvc.yaml").read_bytes())
    for name in declared_metrics(ROOT):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    assert headline_problems(tmp_path) == []
    for name, document in bulk.items():
        (tmp_path / name).write_text(json.dumps(document))
    assert headline_problems(tmp_path) != []
