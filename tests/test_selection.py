"""Select's choice on the validation split only, the paired test against the runner-up, the
sidecar's info the service reports from, and metrics/select.json (lifecycle/selection.py)."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lifecycle.evaluation import CANDIDATES, METRIC_NAMES, confusion_rows, interval_keys
from lifecycle.models import ModelSpec, SeedCNN, save_model
from lifecycle.selection import (
    best_model_info,
    compare_with_runner_up,
    correct_from_confusion_rows,
    runner_up,
    select_best,
    selection_metrics,
    selection_summary,
)
from tests.conftest import ROOT

CLASSES = ["cat", "dog"]


def scores(accuracy: float, f1: float = 0.5) -> dict[str, float]:
    """A split's report as evaluate writes it: each metric followed by its interval."""
    values = {"accuracy": accuracy, "precision": 0.6, "recall": 0.4, "f1": f1, "roc_auc": 0.7}
    report = {}
    for name in METRIC_NAMES:
        low, high = interval_keys(name)
        report.update({name: values[name], low: round(values[name] - 0.05, 6), high: round(values[name] + 0.05, 6)})
    return report


def rows(correct: list[bool]) -> pd.DataFrame:
    """Validation confusion rows (one per image) of a model right exactly where ``correct`` says."""
    labels = np.arange(len(correct)) % 2
    predicted = np.where(correct, labels, 1 - labels)
    return confusion_rows(labels, np.eye(2)[predicted], CLASSES)


def test_selection_uses_validation_only_and_ties_go_to_the_simpler_model():
    reports = {
        "train": {"val": {"accuracy": 0.90, "f1": 0.7}, "test": {"accuracy": 0.80, "f1": 0.9}},
        "finetune": {"val": {"accuracy": 0.85, "f1": 0.8}, "test": {"accuracy": 0.99, "f1": 0.99}},
        "transfer": {"val": {"accuracy": 0.90, "f1": 0.6}, "test": {"accuracy": 0.95, "f1": 0.5}},
    }
    assert select_best(reports, "accuracy") == "train"  # tie with transfer; test would say finetune
    assert select_best(reports, "f1") == "finetune"
    undefined = {name: {"val": {"roc_auc": None}} for name in ("train", "finetune")} | {"transfer": {"val": {"roc_auc": 0.4}}}
    assert select_best(undefined, "roc_auc") == "transfer"  # any score beats an undefined one
    assert select_best({name: undefined[name] for name in ("train", "finetune")}, "roc_auc") == "train"
    assert runner_up(reports, "accuracy") == "transfer"
    assert runner_up({"train": reports["train"]}, "accuracy") is None


def test_which_images_a_model_got_right_comes_from_its_confusion_rows_in_order():
    labels = np.array([0, 1, 1, 0])
    dog = np.array([0.3, 0.8, 0.4, 0.6])
    written = confusion_rows(labels, np.stack([1 - dog, dog], axis=1), CLASSES)
    assert correct_from_confusion_rows(written).tolist() == [True, True, False, False]


def test_the_sidecar_info_carries_the_source_and_both_splits_scores():
    report = {"val": scores(0.9), "test": scores(0.8)}
    source_info = {"stage": "finetune", "best_epoch": 2, "params": {"lr": 0.01}}
    info = best_model_info("finetune", report, "f1", source_info)
    assert info == {"source": "finetune", "selected_by": "val.f1", "val": report["val"], "test": report["test"],
                    "params": {"lr": 0.01}, "training": {"stage": "finetune", "best_epoch": 2}}
    info["val"]["accuracy"] = 0.0
    assert report["val"]["accuracy"] == 0.9                 # a copy: the report is left as evaluate wrote it
    assert best_model_info("train", report, "accuracy", {})["params"] == {}


def test_the_service_reports_the_scores_select_writes(tmp_path):
    """/metadata's metrics are the validation and test scores of the chosen model (once an empty
    dict: the service read a key select never wrote)."""
    from serving import create_app

    report = {"val": scores(0.9), "test": scores(0.8)}
    torch.manual_seed(0)
    spec = ModelSpec("seed_cnn", CLASSES, 32, arguments={"channels": [4]},
                     info=best_model_info("train", report, "accuracy", {"stage": "train"}))
    save_model(SeedCNN(image_size=32, channels=(4,)), spec, tmp_path / "best")
    answer = create_app({"SERVE_MODEL": str(tmp_path / "best")}).test_client().get("/metadata")
    assert answer.status_code == 200
    assert answer.json["metrics"] == report


def test_the_runner_up_comparison_is_mcnemars_test_on_the_same_images():
    # 100 images: both right on 80, the chosen alone on 10, the runner-up alone on 1, both wrong on 9
    chosen = [True] * 80 + [True] * 10 + [False] * 1 + [False] * 9
    second = [True] * 80 + [False] * 10 + [True] * 1 + [False] * 9
    validation = {"train": rows(chosen), "transfer": rows(second)}
    against, test = compare_with_runner_up("train", "transfer", validation, alpha=0.05)
    assert against == {"model": "transfer", "paired_test": "mcnemar_exact", "p_value": round(12 / 2048, 6),
                       "discordant": 11, "beyond_noise": True}
    assert (test.images, test.a_only, test.b_only) == (100, 10, 1)
    assert compare_with_runner_up("train", "transfer", validation, alpha=0.005)[0]["beyond_noise"] is False
    backwards, _ = compare_with_runner_up("transfer", "train", validation, alpha=0.05)
    assert backwards["model"] == "train" and backwards["beyond_noise"] is False


def test_the_summary_line_names_every_candidate_and_the_verdict():
    reports = {"train": {"val": scores(0.9)}, "finetune": {"val": scores(0.85)}, "transfer": {"val": scores(0.875)}}
    validation = {"train": rows([True] * 90 + [False] * 10), "transfer": rows([True] * 87 + [False] * 13)}
    against, test = compare_with_runner_up("train", "transfer", validation, alpha=0.05)
    assert selection_summary(reports, "train", "accuracy", 0.05, against, test) == (
        "select: train (val accuracy 0.9000; train 0.9000, finetune 0.8500, transfer 0.8750); against transfer on "
        "the same 100 validation images: right on 3 it misses, wrong on 0 it gets, McNemar p=0.125: "
        "within noise at alpha 0.05")


def test_the_committed_select_json_is_what_selection_computes_from_the_committed_evaluations():
    """metrics/select.json as dvc repro left it, recomputed from metrics/evaluate/ and the validation
    confusion rows in plots/evaluate/ (all committed): its shape and every value."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["select"]
    reports = {name: json.loads((ROOT / "metrics/evaluate" / f"{name}.json").read_text()) for name in CANDIDATES}
    chosen, second = select_best(reports, params["metric"]), runner_up(reports, params["metric"])
    validation = {name: pd.read_csv(ROOT / "plots/evaluate" / name / "confusion_val.csv") for name in (chosen, second)}
    against, _ = compare_with_runner_up(chosen, second, validation, params["alpha"])
    committed = json.loads((ROOT / "metrics/select.json").read_text())
    assert selection_metrics(chosen, reports[chosen], against) == committed
    assert set(committed["best"]) == {"model", "val", "test", "runner_up"}
    assert all(re.fullmatch(r"(accuracy|precision|recall|f1|roc_auc)(_low|_high)?", key)
               for split in ("val", "test") for key in committed["best"][split])


@pytest.mark.parametrize("metric", ["accuracy", "f1"])
def test_select_json_holds_the_chosen_models_scores_under_best(metric):
    reports = {"train": {"val": scores(0.9, f1=0.5), "test": scores(0.8)},
               "finetune": {"val": scores(0.85, f1=0.6), "test": scores(0.95)}}
    chosen = select_best(reports, metric)
    document = selection_metrics(chosen, reports[chosen], {"model": "x"})
    assert document == {"best": {"model": chosen, "val": reports[chosen]["val"], "test": reports[chosen]["test"],
                                 "runner_up": {"model": "x"}}}
