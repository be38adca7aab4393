"""Every path the pipeline reads or writes, in one place.

Paths are anchored at the repository root (the folder holding ``dvc.yaml``), found from
this file, so stages, tests and DVC experiments in temporary copies all agree.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"
# The check_params stage's output: the same bytes whenever params.yaml is valid. Committed;
# ingest depends on it, so every stage waits for the check (stages/check_params.py says why).
PARAMS_CHECK = ROOT / "params.check.json"

DATA = ROOT / "data"
RAW = DATA / "raw"
RAW_IMAGES = RAW / "images"
RAW_MANIFEST = RAW / "animal_dataset.csv"

INTERIM = DATA / "interim"
CLEAN_MANIFEST = INTERIM / "clean.csv"
IMPUTED_MANIFEST = INTERIM / "imputed.csv"

PROCESSED = DATA / "processed"
FEATURES = PROCESSED / "features.npz"
CLASSES = PROCESSED / "classes.json"
SPLITS = PROCESSED / "split"
TRAIN = SPLITS / "train.npz"
VAL = SPLITS / "val.npz"
TEST = SPLITS / "test.npz"
TRAIN_BALANCED = PROCESSED / "train_balanced.npz"

MODELS = ROOT / "models"
# What a run is judged by, and what explains it. metrics/: the headline numbers a reviewer
# compares (`dvc metrics diff`, the columns of `dvc exp show`); plots/: the breakdowns behind
# them (confusion matrices, per-class and per-reason counts, tune results) as tables DVC
# draws (`dvc plots diff`); reports/: what is neither (eda's summary and label spellings).
METRICS = ROOT / "metrics"
PLOTS = ROOT / "plots"
REPORTS = ROOT / "reports"
# Every file or row a data stage did not keep, by name: path, reason, detail (the metrics
# files hold their totals, plots/<stage>/ the counts per reason).
INGEST_SKIPPED = REPORTS / "ingest_skipped.csv"
PREPROCESS_DROPPED = REPORTS / "preprocess_dropped.csv"


def in_repository(name: str) -> Path:
    """A path from params.yaml: relative to the repository root, or absolute (``~`` expanded)."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else ROOT / path


def relative(path: Path) -> str:
    """``path`` as the user sees it: relative to the repository root when inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# Serving and batch prediction: predict's outputs (the model is BEST_MODEL, below).
PREDICTIONS = DATA / "predictions"
PREDICTIONS_CSV = PREDICTIONS / "predictions.csv"
PREDICTIONS_SKIPPED = PREDICTIONS / "skipped.csv"
PREDICT_REPORT = METRICS / "predict.json"
PREDICT_CLASS_COUNTS = PLOTS / "predict" / "class_counts.csv"
# After deployment: the service's prediction log, feedback labels and kept images (gitignored;
# SERVE_LOG_DIR moves it, and params.yaml's monitor.log_dir must then say the same).
SERVED = ROOT / "served"
MONITOR_REPORT = METRICS / "monitor.json"
MONITOR_TESTS = PLOTS / "monitor" / "drift.csv"
MONITOR_CLASS_RATIO = PLOTS / "monitor" / "class_ratio.csv"
MONITOR_FIGURE = PLOTS / "monitor" / "drift.png"
# Mirrored into MLflow, but no part of a pipeline state's id (tracking/snapshot.py): the drift
# report says what was served since, not what the pipeline made (relative to a repository root).
NOT_STATE_FILES = ("metrics/monitor.json", "plots/monitor/")

# tune (seed step 8e): the best params and score, and the grid-search results as a plot
TUNE_SUMMARY = METRICS / "tune.json"
TUNE_RESULTS = PLOTS / "tune" / "results.csv"
TUNE_CLASS_COUNTS = PLOTS / "tune" / "class_counts.csv"

# Tracking (the MLflow mirror, the tracking/ package). What the mirror reads, relative to a
# repository root; and the names of its local store, artifacts and spool, which live at the
# REAL repository root (also when DVC runs an experiment in a temporary copy) and are gitignored.
MIRRORED_FILES = ("params.yaml", "dvc.lock")
MIRRORED_MODEL = "models/best"  # the selected model: model.pt + model.json
MIRRORED_FOLDERS = ("metrics", "plots", "reports", MIRRORED_MODEL)
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
MLFLOW_SPOOL = ".mlflow-spool"
# The mirror stage's output: the id of the state it last handed to MLflow (sent, or spooled
# to be sent). Gitignored, so a fresh clone lacks it and `dvc repro` runs the mirror there.
MIRROR_RECEIPT = ROOT / ".mlflow-receipt.json"

# The registry's promotion gate (python -m tracking.promote / tracking.rollback): the last
# decision, which `dvc metrics diff` shows (dvc.yaml's top-level metrics), and every decision,
# one line each. Committed by hand, written by no stage; .dvcignore keeps them out of the
# mirror stage's `metrics` dep, and the mirror leaves them out of a pipeline state, so a
# promotion never re-mirrors.
PROMOTION_RECORD = METRICS / "promotion.json"
PROMOTION_LOG = METRICS / "promotion_log.tsv"
NOT_MIRRORED = ("metrics/promotion.json", "metrics/promotion_log.tsv")  # relative to a repository root

# Models (issue 3): pretrain, train, finetune, transfer, evaluate, select.
PRETRAINED = MODELS / "pretrain"           # one folder per backbone architecture
FROZEN_FEATURES = PROCESSED / "frozen_features.npz"
BEST_MODEL = MODELS / "best"


def model_dir(stage: str) -> Path:
    """models/<stage>: model.pt + model.json written by a training stage."""
    return MODELS / stage


def live_dir(stage: str) -> Path:
    """metrics/<stage>: DVCLive's per-epoch curves and the kept epoch's metrics."""
    return METRICS / stage


def evaluation_report(model: str) -> Path:
    return METRICS / "evaluate" / f"{model}.json"


def evaluation_plots(model: str) -> Path:
    return PLOTS / "evaluate" / model


def stage_plots(stage: str) -> Path:
    """plots/<stage>: the per-class and per-reason counts behind a stage's headline metrics."""
    return PLOTS / stage
