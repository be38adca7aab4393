"""Is a difference beyond noise? The rule (scripts/noise.py) on known values, and
``python -m scripts.reproduce_check`` on two real pipeline runs of a tiny repository copy."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scripts.noise import BEYOND, MISSING, WITHIN, has_intervals, judge, unjudged_changes
from tests.conftest import env_with_venv


def entry(old, new) -> dict:
    return {"old": old, "new": new}


DIFF = {
    "metrics/evaluate/train.json": {
        "val.accuracy": entry(0.90, 0.88), "val.accuracy_low": entry(0.86, 0.84), "val.accuracy_high": entry(0.93, 0.91),
        "val.f1": entry(0.85, 0.75), "val.f1_low": entry(0.80, 0.70), "val.f1_high": entry(0.89, 0.80),
        "val.roc_auc": entry(0.96, None), "val.roc_auc_low": entry(0.94, None), "val.roc_auc_high": entry(0.98, None),
    },
    "metrics/split.json": {"val.images": entry(286, 286)},
    "metrics/train/metrics.json": {"val.loss": entry(0.31, 0.33)},
}


def test_a_change_is_within_noise_when_the_new_value_lies_in_the_reference_interval():
    verdicts = {j.key: (j.verdict, j.old, j.new, j.low, j.high) for j in judge(DIFF)}
    assert verdicts == {
        "val.accuracy": (WITHIN, 0.90, 0.88, 0.86, 0.93),    # inside the OLD interval (not the new one's)
        "val.f1": (BEYOND, 0.85, 0.75, 0.80, 0.89),
        "val.roc_auc": (MISSING, 0.96, None, 0.94, 0.98),
    }
    assert unjudged_changes(DIFF) == ["metrics/train/metrics.json:val.loss"]  # listed, not judged; counts equal
    assert has_intervals(DIFF, "old") and not has_intervals({"metrics/split.json": DIFF["metrics/split.json"]}, "old")
    edge = {"m.json": {"a": entry(0.5, 0.6), "a_low": entry(0.4, 0), "a_high": entry(0.6, 0)}}
    assert [j.verdict for j in judge(edge)] == [WITHIN]                 # the interval's ends belong to it


def test_an_undefined_metric_is_listed_not_judged():
    """A ROC AUC of a single class is null in its metrics file: no interval to judge by, but its change is listed."""
    diff = {"m.json": {"roc_auc": entry(None, 0.7), "roc_auc_low": entry(None, 0.6), "roc_auc_high": entry(None, 0.8)}}
    assert judge(diff) == []
    assert unjudged_changes(diff) == ["m.json:roc_auc", "m.json:roc_auc_high", "m.json:roc_auc_low"]


def check(repo, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.reproduce_check", *args], cwd=repo.path, env=env_with_venv(),
                          capture_output=True, text=True, timeout=300)


def headline(repo) -> dict[str, tuple[float, float, float]]:
    """file:key -> (value, low, high) of every headline metric in the workspace's evaluate and select files."""
    found = {}
    for name in ("evaluate/train.json", "evaluate/finetune.json", "evaluate/transfer.json", "select.json"):
        document = json.loads((repo.path / "metrics" / name).read_text())
        for split, scores in (document.get("best", document)).items():
            if split in ("val", "test"):
                prefix = "best." if name == "select.json" else ""
                for metric in ("accuracy", "precision", "recall", "f1", "roc_auc"):
                    found[f"metrics/{name}:{prefix}{split}.{metric}"] = (
                        scores[metric], scores[f"{metric}_low"], scores[f"{metric}_high"])
    return found


@pytest.mark.slow
def test_two_real_runs_that_differ_in_their_numerics_are_judged_against_the_first_ones_intervals(repo_copy):
    repo = repo_copy()
    repo.dvc("repro", "select")
    repo.commit("first run")
    reference = headline(repo)
    assert len(reference) == 40

    same = check(repo)                                                   # nothing rerun: identical
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.strip().endswith("reproduced: all 40 headline metrics identical.")

    repo.set_params({"lr": 0.0025})                                      # another run: train's numerics differ
    repo.dvc("repro", "select")
    rerun = headline(repo)
    changed = {key for key in reference if rerun[key][0] != reference[key][0]}
    assert changed and {key.split(":")[0] for key in changed} >= {"metrics/evaluate/train.json"}
    outside = sorted(key for key, (value, _, _) in rerun.items()
                     if not reference[key][1] <= value <= reference[key][2])
    result = check(repo, "HEAD")
    lines = result.stdout.splitlines()
    for key, (old, low, high) in reference.items():                     # every headline metric, with its verdict
        [line] = [line for line in lines if line.startswith(key + " ")]
        assert line.endswith(BEYOND if key in outside else WITHIN), line
        assert f"[{low:.4f}, {high:.4f}]" in line and f"{rerun[key][0]:.4f}" in line
    assert "not judged (no interval), changed: " in result.stdout and "metrics/train/metrics.json" in result.stdout
    assert result.returncode == (1 if outside else 0), result.stdout
    print(result.stdout)

    repo.set_params({"lr": 0.5, "epochs": 1})                            # a collapsed model: far beyond noise
    repo.dvc("repro", "select")
    collapsed = check(repo)
    assert collapsed.returncode == 1, collapsed.stdout
    assert any(line.startswith("metrics/evaluate/train.json:") and line.endswith(BEYOND)
               for line in collapsed.stdout.splitlines()), collapsed.stdout
    assert "NOT reproduced:" in collapsed.stdout

    missing = check(repo, "nowhere")
    assert missing.returncode == 2 and missing.stderr.startswith("error: 'nowhere' is not a commit")
