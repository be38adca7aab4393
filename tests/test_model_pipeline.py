"""End to end (slow): the model stages in a temporary copy of the repository with tiny
params. `dvc repro` runs them all; `dvc repro --force` reproduces every byte (dvc.lock and
the committed metrics unchanged); `dvc exp run -S lr=0.01` reruns only `train` and what
depends on it, and `dvc metrics diff` shows the change; the train stage runs under torchrun."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lifecycle.core import numerics
from lifecycle.evaluation import METRIC_NAMES, interval_keys
from lifecycle.models import load_model
from tests import dvc_graph

MODEL_STAGES = ["pretrain", "train", "finetune", "frozen_features", "transfer",
                "evaluate@train", "evaluate@finetune", "evaluate@transfer", "select"]
DOWNSTREAM_OF_TRAIN = {"train", "evaluate@train", "select"}


# What a run may write besides the declared outputs: the local MLflow store, DVC's own state and
# each torch stage's numerics fingerprint (the machine's, for the mirror; not the pipeline's).
LOCAL_STATE = {"mlflow.db", "mlartifacts", ".mlflow-spool", ".dvc", numerics.RECORDS}


def undeclared_writes(repo) -> list[str]:
    """Every path the run created or changed (git's view, ignored files included) that no stage declares."""
    declared = [Path(out) for stage in dvc_graph.stages(repo.path) for out in stage.outs]
    listing = repo.run("git", "status", "--porcelain", "--untracked-files=all", "--ignored=matching").stdout
    undeclared = []
    for line in listing.splitlines():
        path = Path(line[3:].strip().strip('"').rstrip("/"))
        if path.parts[0] in LOCAL_STATE or "__pycache__" in path.parts or path.name == "dvc.lock":
            continue
        if not any(path == out or out in path.parents for out in declared):
            undeclared.append(path.as_posix())
    return undeclared


def ran(output: str) -> set[str]:
    return {stage for stage in MODEL_STAGES + ["ingest", "featurize", "split", "synthesize"]
            if f"Running stage '{stage}'" in output}


@pytest.mark.slow
def test_pipeline_reproduces_and_an_experiment_reruns_only_train_and_its_descendants(repo_copy):
    repo = repo_copy()
    first = repo.dvc("repro")
    assert set(MODEL_STAGES) <= ran(first.stdout)
    assert undeclared_writes(repo) == []  # every path the code wrote is a declared output

    best = json.loads((repo.path / "models" / "best" / "model.json").read_text())
    assert best["info"]["source"] in ("train", "finetune", "transfer")
    assert best["info"]["selected_by"] == "val.accuracy"
    assert best["image_size"] == 32 and best["classes"] == ["cat", "dog"]
    headline = {key for metric in METRIC_NAMES for key in (metric, *interval_keys(metric))}  # each with its interval
    for split in ("val", "test"):  # what the service's /metadata reports as the model's metrics
        assert set(best["info"][split]) == headline
    model, spec = load_model(repo.path / "models" / "best")
    assert spec.architecture == best["architecture"]
    for name in ("train", "finetune", "transfer"):
        report = json.loads((repo.path / "metrics" / "evaluate" / f"{name}.json").read_text())
        assert set(report) == {"val", "test"} and set(report["test"]) == headline
        assert 0.0 <= report["test"]["accuracy_low"] <= report["test"]["accuracy"] <= report["test"]["accuracy_high"] <= 1.0
        for confusion, split in (("confusion.csv", "test"), ("confusion_val.csv", "val")):
            rows = (repo.path / "plots" / "evaluate" / name / confusion).read_text().splitlines()
            assert rows[0] == "actual,predicted"
            assert len(rows) - 1 == json.loads((repo.path / "metrics" / "split.json").read_text())[split]["images"]
    selected = json.loads((repo.path / "metrics" / "select.json").read_text())["best"]
    assert selected["model"] == best["info"]["source"] and selected["test"] == best["info"]["test"]
    against = selected["runner_up"]  # the paired test against the runner-up, on the same validation images
    assert against["model"] in {"train", "finetune", "transfer"} - {selected["model"]}
    assert against["paired_test"] == "mcnemar_exact" and 0.0 <= against["p_value"] <= 1.0
    assert against["beyond_noise"] == (against["p_value"] < 0.05)
    plots = json.loads(repo.dvc("plots", "show", "--json").stdout)
    assert not plots.get("errors")
    assert len(plots["data"]["plots/evaluate/transfer/confusion_val.csv"][0]["content"]["data"]["values"]) > 0
    assert len(plots["data"]["plots/predict/class_counts.csv"][0]["content"]["data"]["values"]) == 2
    curves = plots["data"]["Validation accuracy per epoch, all models"][0]["content"]["data"]["values"]
    assert {row["filename"] for row in curves} >= {"train/plots/metrics/val/accuracy.tsv",
                                                    "finetune/plots/metrics/val/accuracy.tsv"}
    assert len(plots["data"]["plots/evaluate/train/confusion.csv"][0]["content"]["data"]["values"]) > 0
    assert any("metrics/pretrain/plots" in name for name in plots["data"])  # the pretext curves

    repo.commit("pipeline run")
    lock = (repo.path / "dvc.lock").read_bytes()
    repo.dvc("repro", "--force")
    assert (repo.path / "dvc.lock").read_bytes() == lock
    assert repo.run("git", "status", "--porcelain").stdout == ""  # metrics and plots byte-identical too

    experiment = repo.dvc("exp", "run", "-S", "lr=0.01")
    assert ran(experiment.stdout) == DOWNSTREAM_OF_TRAIN, experiment.stdout
    metrics = repo.dvc("metrics", "diff", "--md").stdout
    assert "metrics/train/metrics.json" in metrics
    assert "metrics/evaluate/train.json" in metrics
    assert "| lr " in repo.dvc("params", "diff", "--md").stdout


@pytest.mark.slow
def test_train_stage_runs_under_torchrun_with_two_cpu_processes(repo_copy):
    repo = repo_copy()
    repo.dvc("repro", "synthesize")
    result = repo.run(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                      "-m", "stages.train")
    assert result.stdout.count("train epoch 1/2") == 1  # only rank 0 reports
    sidecar = json.loads((repo.path / "models" / "train" / "model.json").read_text())
    assert sidecar["info"]["world_size"] == 2
    assert sidecar["info"]["best_epoch"] in (1, 2)
    live = json.loads((repo.path / "metrics" / "train" / "metrics.json").read_text())
    assert live["best_epoch"] == sidecar["info"]["best_epoch"]
