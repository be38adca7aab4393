"""A seed sweep is one command: model_seed varies the models and keeps the data, and
``python -m scripts.seed_spread`` summarises the experiments that differ by it alone."""
from __future__ import annotations

import json
import sys

import pytest

from scripts.seed_spread import is_headline, param_columns, seed_runs, spread
from tests.test_pipeline_data import stages_run

MODEL_STAGES = {"check_params", "pretrain", "train", "finetune", "frozen_features", "transfer",
                "evaluate@train", "evaluate@finetune", "evaluate@transfer", "select", "predict", "monitor", "mirror"}


def row(typ: str, model_seed: int, accuracy: float, **params) -> dict:
    return {"Experiment": None, "rev": f"r{model_seed}", "typ": typ, "seed": 42, "model_seed": model_seed, "lr": 0.002,
            **params, "metrics/evaluate/train.json:val.accuracy": accuracy,
            "metrics/evaluate/train.json:val.accuracy_low": accuracy - 0.03, "best.val.accuracy": accuracy}


def test_only_runs_that_differ_by_model_seed_alone_are_summarised():
    rows = [row("baseline", 42, 0.90), row("branch_commit", 1, 0.88), row("branch_base", 2, 0.92),
            row("branch_commit", 3, 0.70, lr=0.5),        # another param changed too: not the seed's noise
            row("branch_commit", 1, 0.10)]                 # the same seed again: counted once
    rows.append({**row("branch_commit", 5, 0.99), "State": "Running"})  # not finished: no metrics yet
    runs = seed_runs(rows, {"seed", "model_seed", "lr"})
    assert sorted(runs) == [1, 2, 42]
    table = {entry["metric"]: entry for entry in spread(runs)}
    assert set(table) == {"train val.accuracy", "best.val.accuracy"}  # no interval columns
    accuracy = table["best.val.accuracy"]
    assert accuracy["seeds"] == 3 and accuracy["min"] == 0.88 and accuracy["max"] == 0.92
    assert accuracy["mean"] == pytest.approx(0.90) and accuracy["std"] == pytest.approx(0.02)
    assert not is_headline("metrics/evaluate/train.json:val.accuracy_high") and not is_headline("best.runner_up.p_value")
    assert param_columns({"seed": 1, "train": {"lr": 0.1, "channels": [8]}, "tune": {"grid": {}}}) == {
        "seed", "train.lr", "train.channels", "tune.grid"}


@pytest.mark.slow
def test_a_seed_sweep_reruns_the_models_only_and_is_summarised(repo_copy):
    repo = repo_copy()
    repo.dvc("repro")
    repo.commit("tiny pipeline")
    sweep = repo.dvc("exp", "run", "-S", "model_seed=7")
    assert stages_run(sweep.stdout) <= MODEL_STAGES and "train" in stages_run(sweep.stdout)  # the data stays
    repo.dvc("exp", "run", "-S", "model_seed=8")
    result = repo.run(sys.executable, "-m", "scripts.seed_spread", "--json")
    summary = json.loads(result.stdout)
    assert summary["model_seed"] == [7, 8, 42]
    metrics = {entry["metric"]: entry for entry in summary["metrics"]}
    assert {"best.val.accuracy", "best.test.accuracy"} <= set(metrics)
    assert all(entry["seeds"] == 3 and entry["min"] <= entry["mean"] <= entry["max"] for entry in metrics.values())
    assert any(entry["std"] > 0 for entry in metrics.values())  # three seeds, three different models
