"""Tune (seed step 8e): grid search on tiny data, honest folds, reproducible bytes, bad params."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import yaml
from imblearn.over_sampling import SMOTE
from sklearn.model_selection import StratifiedKFold

from lifecycle.core.errors import UserError
from lifecycle.core.params import validate
from lifecycle.core.schema import TuneParams
from lifecycle.tuning import check_tune_params, draw_subsample, grid_keys, tune
from tests.conftest import ROOT

CLASSES = ["cat", "dog"]
SEED = 7

# Two conv channels, one or two epochs, two folds: a whole search in a couple of seconds.
TINY = {"grid": {"lr": [0.01, 0.001], "max_epochs": [1, 2]}, "folds": 2, "subsample": 0, "channels": [2], "batch_size": 16,
        "scoring": "accuracy"}


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tiny batches gain nothing from a second thread, and on a shared two-core machine the
    # threads' spin-waiting makes them several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_params(**changes) -> TuneParams:
    params = validate(TuneParams, {**TINY, **changes}, prefix="tune.")
    check_tune_params(params)
    return params


def small_smote() -> SMOTE:
    # 12 dogs in 40 images: a training fold of two holds 6, enough for 3 neighbours.
    return SMOTE(k_neighbors=3, random_state=SEED)


def test_tune_reports_every_candidate_and_the_best(tiny_images):
    images, labels = tiny_images
    result = tune(images, labels, CLASSES, tiny_params(), small_smote(), SEED)

    table = result.results
    assert len(table) == 4
    assert list(table.columns) == ["candidate", "lr", "max_epochs", "fold0_score", "fold1_score", "mean_score", "std_score", "rank"]
    assert sorted(zip(table["lr"], table["max_epochs"])) == [(0.001, 1), (0.001, 2), (0.01, 1), (0.01, 2)]
    assert table.loc[0, "candidate"] == "lr=0.01 max_epochs=1"
    assert np.allclose(table["mean_score"], table[["fold0_score", "fold1_score"]].mean(axis=1), atol=1e-6)
    assert table["mean_score"].between(0, 1).all()

    summary = result.summary
    best = table.loc[table["mean_score"].idxmax()]
    assert summary["best_score"] == pytest.approx(best["mean_score"], abs=1e-6)
    assert summary["best_params"] == {"lr": best["lr"], "max_epochs": best["max_epochs"]}
    assert summary["candidates"] == 4 and summary["folds"] == 2 and summary["images"] == 40
    assert summary["class_counts"] == {"cat": 28, "dog": 12}
    assert summary["scoring"] == "accuracy" and summary["sampler"] == "SMOTE"


def test_tune_gives_the_same_bytes_twice_whatever_the_grid_order(tiny_images):
    images, labels = tiny_images
    first = tune(images, labels, CLASSES, tiny_params(), small_smote(), SEED)
    second = tune(images, labels, CLASSES, tiny_params(), small_smote(), SEED)
    assert first.results.to_csv(index=False) == second.results.to_csv(index=False)
    assert first.summary == second.summary

    # Every fit seeds itself, so a candidate's scores do not depend on which fits ran before it.
    reordered = tune(images, labels, CLASSES, tiny_params(grid={"lr": [0.001, 0.01], "max_epochs": [2, 1]}), small_smote(), SEED)
    by_candidate = lambda result: result.results.set_index("candidate").sort_index()  # noqa: E731
    assert by_candidate(reordered).equals(by_candidate(first))


class RecordingSMOTE(SMOTE):
    """SMOTE that notes the class counts of every set it is asked to resample."""

    seen: list[list[int]] = []

    def fit_resample(self, X, y, **params):
        RecordingSMOTE.seen.append(np.bincount(y, minlength=2).tolist())
        return super().fit_resample(X, y, **params)


def test_the_sampler_sees_training_folds_only_and_validation_folds_stay_original(tiny_images):
    images, labels = tiny_images
    RecordingSMOTE.seen = []
    scored: list[list[int]] = []
    params = tiny_params(folds=3)
    tune(images, labels, CLASSES, params, RecordingSMOTE(k_neighbors=3, random_state=SEED), SEED,
         on_fold_scored=lambda y: scored.append(np.bincount(y, minlength=2).tolist()))

    folds = list(StratifiedKFold(n_splits=3, shuffle=True, random_state=SEED).split(images, labels))
    training = [np.bincount(labels[train], minlength=2).tolist() for train, _ in folds]
    validation = [np.bincount(labels[held_out], minlength=2).tolist() for _, held_out in folds]
    assert sorted(map(sum, training)) == [26, 27, 27]
    candidates = 4
    # One resampling per fit, always of a training fold, never of all 40 images ...
    assert sorted(RecordingSMOTE.seen) == sorted(training * candidates)
    assert [28, 12] not in RecordingSMOTE.seen
    # ... and every validation fold is scored on its original images: same size, same imbalance.
    assert sorted(scored) == sorted(validation * candidates)
    assert sum(map(sum, scored)) == 40 * candidates


def test_no_sampler_and_a_subsample(tiny_images):
    images, labels = tiny_images
    result = tune(images, labels, CLASSES, tiny_params(subsample=30, grid={"lr": [0.01]}), None, SEED)
    assert result.summary["images"] == 30
    assert result.summary["class_counts"] == {"cat": 21, "dog": 9}  # stratified: the 70/30 balance is kept
    assert result.summary["sampler"] == "none"
    assert result.summary["best_params"] == {"lr": 0.01}


def test_draw_subsample_is_stratified_seeded_and_keeps_order(tiny_images):
    images, labels = tiny_images
    sub_images, sub_labels = draw_subsample(images, labels, 20, SEED)
    again, _ = draw_subsample(images, labels, 20, SEED)
    assert np.bincount(sub_labels).tolist() == [14, 6]
    assert np.array_equal(sub_images, again)
    rows = [int(np.flatnonzero((images == image).all(axis=(1, 2, 3)))[0]) for image in sub_images]
    assert rows == sorted(rows)
    assert draw_subsample(images, labels, 0, SEED)[0] is images


def test_the_grid_may_vary_any_net_parameter(tiny_images):
    images, labels = tiny_images
    grid = {"module__channels": [[2], [2, 2]], "optimizer__weight_decay": [0.0, 0.01], "batch_size": [8]}
    result = tune(images, labels, CLASSES, tiny_params(grid=grid), None, SEED)
    assert len(result.results) == 4
    assert set(result.results["module__channels"]) == {"2", "2 2"}
    assert result.summary["best_params"]["module__channels"] in ([2], [2, 2])
    assert {"lr", "max_epochs", "batch_size", "module__channels", "optimizer__weight_decay"} <= set(grid_keys())


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"grid": {"learning_rate": [0.1]}}, "'tune.grid.learning_rate' is not a parameter the tuned net accepts"),
        ({"grid": {"module__image_size": [32]}}, "'tune.grid.module__image_size' is not a parameter"),
        ({"grid": {"lr": [0.01, -0.1]}}, "'tune.grid.lr' values must be positive numbers, got -0.1"),
        ({"grid": {"max_epochs": [0]}}, "'tune.grid.max_epochs' values must be integers of at least 1, got 0"),
        ({"grid": {"max_epochs": [2.5]}}, "'tune.grid.max_epochs' values must be integers"),
        ({"grid": {"batch_size": [True]}}, "'tune.grid.batch_size' values must be integers"),
        ({"grid": {"lr": []}}, "'tune.grid.lr' must list at least one value"),
        ({"grid": {"lr": 0.01}}, "'tune.grid.lr' must be a list"),
        ({"grid": {"lr": [0.01, 0.01]}}, "'tune.grid.lr' lists a value twice"),
        ({"grid": {}}, "'tune.grid' must name at least one parameter"),
        ({"grid": {"module__channels": [8]}}, "'tune.grid.module__channels' values must be lists"),
        ({"folds": 1}, "'tune.folds' must be at least 2, got int 1"),
        ({"subsample": 5}, "'tune.subsample' must be 0 (all images) or at least 10 per fold"),
        ({"channels": []}, "'tune.channels' must list at least one positive channel count"),
        ({"scoring": "acuracy"}, "'tune.scoring' is not a scikit-learn scorer name"),
        ({"epochs": 3}, "unknown key 'tune.epochs'"),
    ],
)
def test_bad_params_name_the_key(changes, expected):
    with pytest.raises(UserError) as caught:
        tiny_params(**changes)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        # The net itself rejects these; the message still names the key and the value.
        ({"optimizer__weight_decay": [0.0, -1.0]}, "'tune.grid.optimizer__weight_decay' value -1.0 is rejected by the net"),
        ({"module__channels": [[2, 2, 2, 2, 2, 2]]}, "'tune.grid.module__channels' value [2, 2, 2, 2, 2, 2] does not fit"),
    ],
)
def test_grid_values_the_net_rejects_name_the_key(tiny_images, grid, expected):
    images, labels = tiny_images
    with pytest.raises(UserError) as caught:
        tune(images, labels, CLASSES, tiny_params(grid=grid), None, SEED)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_channels_the_image_size_cannot_take_name_the_key(tiny_images):
    images, labels = tiny_images
    with pytest.raises(UserError, match=r"'tune.channels' does not fit: \[2, 2, 2, 2, 2, 2\] makes 6 pooling blocks, so featurize.image_size \(32\) must be divisible by 64"):
        tune(images, labels, CLASSES, tiny_params(channels=[2] * 6), None, SEED)


def test_data_too_small_for_the_folds_or_the_sampler_names_the_key(tiny_images):
    images, labels = tiny_images
    with pytest.raises(UserError, match="'synthesize.k_neighbors' is 6 but a training fold holds only 6 images"):
        tune(images, labels, CLASSES, tiny_params(), SMOTE(k_neighbors=6, random_state=SEED), SEED)
    with pytest.raises(UserError, match="'tune.folds' is 13 but the smallest class has only 12 images"):
        tune(images, labels, CLASSES, tiny_params(folds=13, subsample=0), None, SEED)


@pytest.mark.slow
def test_the_stage_stops_on_a_bad_grid_key_with_one_line(repo_copy):
    repo = repo_copy({"tune": {"grid": {"learning_rate": [0.1]}}})
    result = repo.run(sys.executable, "-m", "stages.tune", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: params.yaml: 'tune.grid.learning_rate' is not a parameter the tuned net accepts")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_tune_searches_the_unbalanced_split_and_reads_the_sampler_s_params():
    """SMOTE belongs inside the folds, so tune reads the split before synthesis, and the
    sampler's own params (dvc.yaml's deps and params must say so; the closure test checks the code)."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["tune"]
    assert "data/processed/split/train.npz" in stage["deps"]
    assert "data/processed/train_balanced.npz" not in stage["deps"]
    assert set(stage["params"]) == {"seed", "numerics", "tune", "synthesize"}
    committed = validate(TuneParams, yaml.safe_load((ROOT / "params.yaml").read_text())["tune"], prefix="tune.")
    assert committed.grid == {"lr": [0.01, 0.001], "max_epochs": [10, 20]}  # the seed's grid


@pytest.mark.slow
def test_dvc_repro_tune_twice_gives_the_same_lock(repo_copy):
    # four fits per fold on a stratified draw of 60 images (SMOTE's neighbours fit in its folds)
    repo = repo_copy({"tune": {"grid": {"lr": [0.01, 0.001], "max_epochs": [1, 2]}, "subsample": 60},
                      "synthesize": {"k_neighbors": 3}})
    repo.dvc("repro", "tune")
    lock = (repo.path / "dvc.lock").read_text()
    results = (repo.path / "plots" / "tune" / "results.csv").read_bytes()
    repo.dvc("repro", "--force", "tune", "--single-item")
    assert (repo.path / "dvc.lock").read_text() == lock
    assert (repo.path / "plots" / "tune" / "results.csv").read_bytes() == results
    assert len(results.decode().splitlines()) == 5
    summary = json.loads((repo.path / "metrics" / "tune.json").read_text())
    assert set(summary) == {"best_params", "best_score", "best_score_std"}
    counts = (repo.path / "plots" / "tune" / "class_counts.csv").read_text().splitlines()
    assert counts[0] == "class,images" and sum(int(row.split(",")[1]) for row in counts[1:]) == 60
