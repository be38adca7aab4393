"""Tune (seed step 8e): grid search over the CNN's hyperparameters with honest folds.

The seed wraps its CNN in skorch's ``NeuralNetClassifier`` and hands it to scikit-learn's
``GridSearchCV`` (``lr`` in [0.01, 0.001], ``max_epochs`` in [10, 20]). Here the grid comes
from ``params.yaml`` (the seed's by default; any key the net accepts can be added) and the
estimator is an imbalanced-learn ``Pipeline``::

    sampler (SMOTE, from synthesize.*) -> ModelInput (to_model_input) -> NeuralNetClassifier(SeedCNN)

so resampling happens inside each fit, on that fit's training folds only: validation folds
keep their original images and class balance, and the cross-validated score is not
inflated by synthetic neighbours of the images it is scored on. That is why tune reads the
*un-resampled* training split. SMOTE interpolates raw pixel values, exactly as the
``synthesize`` stage does; normalisation follows it.

Every fit seeds torch from ``seed`` when it initialises the net, so each candidate's score
is the same whatever the grid's order, and the results table (no timings in it) is
byte-identical run to run. A small conv stack, a stratified subsample and few folds keep
the default search near a minute on two CPU cores; ``params.yaml`` says how to scale up.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from imblearn.pipeline import Pipeline
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.metrics import get_scorer, get_scorer_names
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from skorch import NeuralNetClassifier
from torch import nn

from lifecycle.core import numerics
from lifecycle.core.errors import UserError
from lifecycle.core.images import IMAGENET_MEAN, IMAGENET_STD
from lifecycle.core.schema import TuneParams
from lifecycle.models import SeedCNN, to_model_input

OPTIMIZER = torch.optim.Adam  # as train: Adam and cross-entropy
CRITERION = nn.CrossEntropyLoss

# The net's own hyperparameters a grid may vary; module__* and optimizer__* follow below.
NET_KEYS = ("lr", "max_epochs", "batch_size")
# Fixed by the data or by the harness, so never a grid key.
_FIXED_MODULE_ARGS = {"self", "image_size", "num_classes"}
# The learning rate is the net's `lr`; the rest are implementation switches, not hyperparameters.
_FIXED_OPTIMIZER_ARGS = {"self", "params", "lr", "foreach", "maximize", "capturable", "differentiable", "fused"}


def grid_keys() -> list[str]:
    """Every key a ``tune.grid`` may name."""
    module_args = [p for p in inspect.signature(SeedCNN.__init__).parameters if p not in _FIXED_MODULE_ARGS]
    optimizer_args = [p for p in inspect.signature(OPTIMIZER.__init__).parameters if p not in _FIXED_OPTIMIZER_ARGS]
    return [*NET_KEYS, *(f"module__{a}" for a in module_args), *(f"optimizer__{a}" for a in optimizer_args)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_tune_params(params: TuneParams) -> None:
    """What the schema cannot check without skorch and scikit-learn: every grid key is a
    parameter of the tuned net, every value fits it, the scorer exists. A UserError names the key."""

    def require(condition: bool, key: str, message: str) -> None:
        if not condition:
            raise UserError(f"params.yaml: 'tune.{key}' {message}.")

    known = grid_keys()
    for key, values in params.grid.items():
        require(key in known, f"grid.{key}", f"is not a parameter the tuned net accepts; use one of: {', '.join(known)}")
        for value in values:
            if key == "lr":
                require(_is_number(value) and value > 0, f"grid.{key}", f"values must be positive numbers, got {value!r}")
            elif key in ("max_epochs", "batch_size"):
                require(_is_int(value) and value >= 1, f"grid.{key}", f"values must be integers of at least 1, got {value!r}")
            elif key == "module__channels":
                require(isinstance(value, list) and len(value) >= 1 and all(_is_int(c) and c >= 1 for c in value),
                        f"grid.{key}", f"values must be lists of positive channel counts such as [8, 16], got {value!r}")
    require(params.scoring in get_scorer_names(), "scoring",
            f"is not a scikit-learn scorer name (such as accuracy, f1, roc_auc, balanced_accuracy), got '{params.scoring}'")


class ModelInput(BaseEstimator, TransformerMixin):
    """Flat pixel rows (what the sampler sees) -> the normalised float32 NCHW batch the CNN takes."""

    def __init__(self, image_size: int = 64, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        self.image_size = image_size
        self.mean = mean
        self.std = std

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> "ModelInput":
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        images = np.asarray(X, dtype=np.float32).reshape(len(X), self.image_size, self.image_size, 3)
        return to_model_input(images, self.mean, self.std).numpy()


class SeededNetClassifier(NeuralNetClassifier):
    """A NeuralNetClassifier that seeds torch each time it (re)initialises, i.e. on every fit.

    Weight initialisation and batch shuffling then depend only on ``random_state``, not on
    how many fits ran before this one in the search.
    """

    def __init__(self, *args: Any, random_state: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.random_state = random_state

    def initialize(self) -> "SeededNetClassifier":
        torch.manual_seed(self.random_state)
        return super().initialize()


def device() -> str:
    """CUDA when it is there, CPU otherwise."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_deterministic() -> None:
    # cuBLAS needs a fixed workspace for deterministic matrix products on CUDA.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)


def build_pipeline(sampler: Any, image_size: int, params: TuneParams, seed: int) -> Pipeline:
    """sampler -> ModelInput -> net; ``sampler`` None skips resampling."""
    net = SeededNetClassifier(
        SeedCNN,
        module__image_size=image_size,
        module__channels=tuple(params.channels),
        criterion=CRITERION,
        optimizer=OPTIMIZER,
        batch_size=params.batch_size,
        train_split=None,              # GridSearchCV's folds are the validation
        iterator_train__shuffle=True,
        device=device(),
        verbose=0,                     # one progress bar for the whole search instead
        random_state=seed,
        # portable numerics: Adam's fused kernel, as the training loop (lifecycle/core/numerics.py)
        **{f"optimizer__{key}": value for key, value in numerics.adam_options().items()},
    )
    return Pipeline([("sampler", sampler), ("to_input", ModelInput(image_size)), ("net", net)])


def check_grid_against_net(pipeline: Pipeline, grid: dict[str, list[Any]]) -> None:
    """Build the net with each grid value on its own; a value it rejects names its key."""
    if "module__channels" not in grid:
        net = pipeline.named_steps["net"]
        try:
            clone(net).initialize()
        except UserError:
            channels = list(net.module__channels)
            size = net.module__image_size
            raise UserError(
                f"params.yaml: 'tune.channels' does not fit: {channels} makes {len(channels)} pooling blocks, "
                f"so featurize.image_size ({size}) must be divisible by {2 ** len(channels)}."
            ) from None
    for key, values in grid.items():
        for value in values:
            net = clone(pipeline.named_steps["net"])
            try:
                net.set_params(**{key: tuple(value) if key == "module__channels" else value}).initialize()
            except UserError as error:
                raise UserError(f"params.yaml: 'tune.grid.{key}' value {value!r} does not fit: {error}".rstrip(".") + ".") from None
            except (TypeError, ValueError) as error:
                reason = str(error).splitlines()[0].rstrip(".")
                raise UserError(f"params.yaml: 'tune.grid.{key}' value {value!r} is rejected by the net: {reason}.") from None


def search_grid(grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The grid as GridSearchCV takes it: keys of the pipeline's ``net`` step."""
    return {f"net__{key}": [tuple(v) if key == "module__channels" else v for v in values] for key, values in grid.items()}


def draw_subsample(images: np.ndarray, labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified draw of ``size`` images (all of them when ``size`` is 0 or too large), in original order."""
    if size == 0 or size >= len(labels):
        return images, labels
    chosen, _ = train_test_split(np.arange(len(labels)), train_size=size, stratify=labels, random_state=seed)
    chosen = np.sort(chosen)
    return images[chosen], labels[chosen]


def check_fold_sizes(labels: np.ndarray, folds: int, sampler: Any) -> None:
    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min()) if counts.any() else 0
    if smallest < folds:
        raise UserError(f"params.yaml: 'tune.folds' is {folds} but the smallest class has only {smallest} images in the subsample; lower it or raise tune.subsample.")
    k = getattr(sampler, "k_neighbors", None)
    in_training_folds = smallest - -(-smallest // folds)  # the fewest a training fold can hold
    if isinstance(k, int) and in_training_folds <= k:
        raise UserError(
            f"params.yaml: 'synthesize.k_neighbors' is {k} but a training fold holds only {in_training_folds} images of the smallest class; raise tune.subsample or lower it."
        )


@dataclasses.dataclass
class TuneResult:
    results: pd.DataFrame        # one row per candidate: params, per-fold and mean scores, rank
    summary: dict[str, Any]      # best params and score, and what the search ran on


def tune(
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    params: TuneParams,
    sampler: Any,
    seed: int,
    on_fold_scored: Callable[[np.ndarray], None] | None = None,
) -> TuneResult:
    """Grid-search the CNN on uint8 images (N, S, S, 3) and int64 labels.

    ``on_fold_scored`` is called with the labels of every validation fold as it is scored
    (the stage advances its progress bar with it).
    """
    check_tune_params(params)
    make_deterministic()
    images, labels = draw_subsample(images, labels, params.subsample, seed)
    check_fold_sizes(labels, params.folds, sampler)
    image_size = images.shape[1]
    pipeline = build_pipeline(sampler, image_size, params, seed)
    check_grid_against_net(pipeline, params.grid)

    scorer = get_scorer(params.scoring)

    def score(estimator: Any, X: np.ndarray, y: np.ndarray) -> float:
        if on_fold_scored is not None:
            on_fold_scored(y)
        return scorer(estimator, X, y)

    search = GridSearchCV(
        pipeline,
        search_grid(params.grid),
        scoring=score,
        cv=StratifiedKFold(n_splits=params.folds, shuffle=True, random_state=seed),
        refit=False,                 # the search reports; train builds the model
        n_jobs=None,
        error_score="raise",
    )
    flat = images.reshape(len(images), -1).astype(np.float32)  # what SMOTE interpolates: raw pixel values
    search.fit(flat, labels.astype(np.int64))
    results = results_table(search.cv_results_, params.grid, params.folds)
    best = results.loc[results["rank"] == 1].iloc[0]
    summary = {
        "best_params": {key: _plain(search.best_params_[f"net__{key}"]) for key in params.grid},
        "best_score": float(search.best_score_),
        "best_score_std": float(best["std_score"]),
        "scoring": params.scoring,
        "folds": params.folds,
        "candidates": len(results),
        "images": int(len(labels)),
        "class_counts": {name: int(n) for name, n in zip(classes, np.bincount(labels, minlength=len(classes)))},
        "sampler": type(sampler).__name__ if sampler is not None else "none",
    }
    return TuneResult(results, summary)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def describe(params: dict[str, Any]) -> str:
    """``{'lr': 0.01, 'max_epochs': 10}`` -> ``'lr=0.01 max_epochs=10'`` (a stable row label)."""
    return " ".join(f"{key}={_plain(value)}".replace(" ", "") for key, value in params.items())


def results_table(cv_results: dict[str, Any], grid: dict[str, list[Any]], folds: int) -> pd.DataFrame:
    """GridSearchCV's ``cv_results_`` without the timings (which differ every run), scores rounded.

    One row per candidate: a label, the grid values, the score (``tune.scoring``) of each
    validation fold, their mean and standard deviation, and the rank (1 is best; ties share it).
    """
    rows = []
    for i, candidate in enumerate(cv_results["params"]):
        values = {key: _plain(candidate[f"net__{key}"]) for key in grid}
        row: dict[str, Any] = {"candidate": describe(values), **{key: _as_cell(v) for key, v in values.items()}}
        for fold in range(folds):
            row[f"fold{fold}_score"] = round(float(cv_results[f"split{fold}_test_score"][i]), 6)
        row["mean_score"] = round(float(cv_results["mean_test_score"][i]), 6)
        row["std_score"] = round(float(cv_results["std_test_score"][i]), 6)
        row["rank"] = int(cv_results["rank_test_score"][i])
        rows.append(row)
    return pd.DataFrame(rows)


def _as_cell(value: Any) -> Any:
    return " ".join(str(v) for v in value) if isinstance(value, list) else value
