"""Shared fixtures: tiny data, and a temporary copy of the repository with tiny params.

``repo_copy`` copies the tracked files (not data, models or the DVC cache) into a fresh
git repository under ``tmp_path`` and shrinks params.yaml (``TINY_PARAMS``: the data and every
model stage) so a whole pipeline runs in a minute or two; a test passes its own ``overrides`` on
top. Commands run there with the project's virtualenv first on PATH, as a user's activated shell
would.
"""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# The small params every repository copy starts from: the data (160 images of 32 pixels) and every
# model stage (epochs, tune's grid and subsample) shrunk, so that a stage runs in seconds and the
# whole pipeline in a minute or two on two CPU cores. A test passes only what it is about on top.
TINY_PARAMS = {
    "ingest": {"synthetic": {"count": 160}},
    "featurize": {"image_size": 32},
    "augment": {"preview_images": 2, "preview_variants": 3},
    "epochs": 2,
    "batch_size": 16,
    "pretrain": {"epochs": 1},
    "finetune": {"epochs": 1},
    "transfer": {"epochs": 3},
    "tune": {"grid": {"lr": [0.01], "max_epochs": [2]}, "subsample": 0, "channels": [2]},
}


@pytest.fixture(scope="session", autouse=True)
def prediction_log_outside_the_repository(tmp_path_factory):
    """Every service a test starts (in process, or gunicorn inheriting the environment) logs into a
    temporary folder, never the repository's served/ (a test about the log sets its own)."""
    os.environ.setdefault("SERVE_LOG_DIR", str(tmp_path_factory.mktemp("served")))


def git_status(repo: "RepoCopy") -> str:
    """``git status --porcelain`` in a repository copy, untracked files included: empty when clean."""
    return repo.run("git", "status", "--porcelain", "--untracked-files=all").stdout


def deep_merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def env_with_venv() -> dict[str, str]:
    """The environment with this interpreter's folder first on PATH (as an activated venv)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("DVC_EXP_NAME", None)
    return env


class RepoCopy:
    def __init__(self, path: Path) -> None:
        self.path = path

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        result = subprocess.run(
            list(args), cwd=self.path, env=env_with_venv(), capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def params(self) -> dict:
        return yaml.safe_load((self.path / "params.yaml").read_text())

    def set_params(self, overrides: dict) -> None:
        merged = deep_merge(self.params(), overrides)
        (self.path / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", message)


def make_repo_copy(destination: Path, overrides: dict | None = None) -> RepoCopy:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file() and not name.startswith(("metrics/", "plots/")) and name != "dvc.lock":
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    repo = RepoCopy(destination)
    repo.set_params(deep_merge(TINY_PARAMS, overrides or {}))
    repo.run("git", "init", "-q", "-b", "main")
    repo.run("git", "config", "user.email", "tests@example.com")
    repo.run("git", "config", "user.name", "tests")
    repo.commit("copy of the repository with tiny params")
    return repo


@pytest.fixture
def repo_copy(tmp_path: Path):
    """A factory: ``repo_copy(overrides)`` -> a committed tiny copy of the repository."""
    return lambda overrides=None: make_repo_copy(tmp_path / "repo", overrides)


@pytest.fixture
def default_mlflow_store(monkeypatch) -> None:
    """No tracking server or experiment name from the caller's environment: the mirror writes the repository's own store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


@pytest.fixture
def tiny_images() -> tuple[np.ndarray, np.ndarray]:
    """40 random 32x32 RGB uint8 images and imbalanced labels (28 cats, 12 dogs)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0] * 28 + [1] * 12, dtype=np.int64)
    return images, labels
