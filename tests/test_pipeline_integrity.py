"""dvc.lock stays the truth (slow, end to end in temporary copies of the repository):

- a user's own folder (``ingest.path``) is a real dependency: adding, removing or changing one
  image reruns ingest and everything downstream;
- a stage killed mid-run (ingest, train) leaves every committed file as it was and nothing git
  sees, and the next run of that stage removes what the killed one left;
- a fresh clone reaches MLflow with the README's first command: one run for the pipeline state,
  every param, and a no-op `dvc repro` afterwards does no work.
"""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.conftest import env_with_venv, git_status

DATA_STAGES = ["ingest", "preprocess", "impute", "featurize", "split", "synthesize"]


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def kaggle_folder(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label = "cat" if i % 3 else "dog"
        colour = (40 + 5 * i % 200, 90, 160) if label == "cat" else (200, 60 + 3 * i % 150, 40)
        Image.new("RGB", (40 + i % 7, 36), colour).save(folder / f"{label}.{i}.jpg", quality=90)


def temporaries(root: Path) -> list[str]:
    found = []
    for folder in ("data", "models", "metrics", "plots"):
        found += [str(p.relative_to(root)) for p in (root / folder).rglob(".*") if p.name.endswith((".tmp", ".tmpdir"))]
    return sorted(found)


@pytest.mark.slow
def test_the_users_folder_is_a_dependency_of_ingest_and_everything_downstream(repo_copy, tmp_path):
    folder = tmp_path / "my-pets"
    kaggle_folder(folder, 60)
    repo = repo_copy({"ingest": {"source": "kaggle", "path": str(folder)}, "split": {"val_fraction": 0.2,
                                                                                      "test_fraction": 0.2}})
    assert ran(repo.dvc("repro", "synthesize").stdout) == ["check_params", *DATA_STAGES]  # params checked once
    assert "up to date" in repo.dvc("status", "--with-deps", "synthesize").stdout

    kaggle_folder(folder, 61)                                   # one image added
    assert "ingest" in repo.dvc("status", "--with-deps", "synthesize").stdout
    assert ran(repo.dvc("repro", "synthesize").stdout) == DATA_STAGES
    rows = (repo.path / "data/raw/animal_dataset.csv").read_text().splitlines()
    assert len(rows) == 1 + 61

    (folder / "cat.1.jpg").unlink()                              # one removed
    assert ran(repo.dvc("repro", "synthesize").stdout) == DATA_STAGES
    Image.new("RGB", (40, 36), (0, 0, 0)).save(folder / "cat.2.jpg")  # one changed, same name and count
    assert ran(repo.dvc("repro", "synthesize").stdout) == DATA_STAGES
    assert "up to date" in repo.dvc("status", "--with-deps", "synthesize").stdout


# Runs a stage that stops for good at a known point: it replaces ``target`` (module:attribute) with a
# wrapper that calls the original first when ``when`` is "after", then leaves ``marker`` and sleeps
# until the test kills it. The kill then lands at that point, however fast or loaded the machine.
PAUSED_STAGE = """
import importlib, runpy, sys, time
from pathlib import Path
stage, target, when, marker = sys.argv[1:]
module, _, attribute = target.partition(":")
owner = importlib.import_module(module)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
original = getattr(owner, name)
def paused(*args, **kwargs):
    if when == "after":
        original(*args, **kwargs)
    Path(marker).write_text(target)
    time.sleep(3600)
setattr(owner, name, paused)
sys.argv = [stage]
runpy.run_module(f"stages.{stage}", run_name="__main__")
"""


def kill_at(repo, stage: str, target: str, when: str, seconds: float = 600) -> None:
    """Run ``stage`` until it reaches ``target`` (see PAUSED_STAGE), then SIGKILL it."""
    marker, log = repo.path.parent / f"{stage}.reached", repo.path.parent / f"{stage}.log"
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-c", PAUSED_STAGE, stage, target, when, str(marker)],
                                   cwd=repo.path, env=env_with_venv(), stdout=output, stderr=output,
                                   start_new_session=True)
    deadline = time.monotonic() + seconds
    while not marker.exists():
        assert process.poll() is None, f"{stage} ended before it reached {target}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{stage} did not reach {target} within {seconds} s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_a_killed_stage_leaves_committed_files_as_they_were_and_the_next_run_cleans_up(repo_copy):
    repo = repo_copy()
    repo.dvc("repro", "train")
    repo.commit("pipeline up to train")
    assert git_status(repo) == ""

    # ingest: killed with every image drawn into its staging folder beside data/raw, just before it moves into place
    kill_at(repo, "ingest", "lifecycle.core.io:promote_dir", "before")
    assert any(p.name.startswith(".raw.") for p in (repo.path / "data").iterdir()), temporaries(repo.path)
    assert git_status(repo) == ""                         # committed files untouched, the leftover ignored
    assert "up to date" in repo.dvc("status", "--with-deps", "train").stdout  # ... and invisible to DVC

    # train: killed right after DVCLive logged the first epoch into its staging folder beside metrics/train
    kill_at(repo, "train", "lifecycle.training.log:EpochLog.log", "after")
    assert any(p.name.startswith(".train.") and any(p.rglob("accuracy.tsv")) for p in (repo.path / "metrics").iterdir())
    assert git_status(repo) == ""
    assert "up to date" in repo.dvc("status", "--with-deps", "train").stdout

    repo.dvc("repro", "--force", "ingest", "train")       # the next runs remove what the killed ones left
    assert temporaries(repo.path) == []
    assert git_status(repo) == ""                         # same params, same bytes


@pytest.mark.slow
def test_a_fresh_clone_reaches_mlflow_in_one_command_and_a_no_op_repro_does_nothing(repo_copy, tmp_path, default_mlflow_store):
    origin = repo_copy()
    origin.dvc("repro")
    origin.commit("a full run: dvc.lock and metrics, as the repository ships them")

    clone = tmp_path / "clone"
    origin.run("git", "clone", "-q", str(origin.path), str(clone))
    env = env_with_venv()
    first = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=clone, env=env, capture_output=True,
                           text=True, timeout=1800)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Running stage 'mirror'" in first.stdout
    with sqlite3.connect(clone / "mlflow.db") as db:
        runs = db.execute("select run_uuid from runs where status = 'FINISHED'").fetchall()
        assert len(runs) == 1
        params = dict(db.execute("select key, value from params where run_uuid = ?", runs[0]).fetchall())
        registered = db.execute("select name, version from model_versions").fetchall()
    document = yaml.safe_load((clone / "params.yaml").read_text())
    assert params["lr"] == str(document["lr"]) and params["featurize.image_size"] == str(document["featurize"]["image_size"])
    assert params["ingest.synthetic.count"] == str(document["ingest"]["synthetic"]["count"])
    assert registered == [("cats-vs-dogs", 1)]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    assert status == ""                                   # same bytes as committed; the receipt is gitignored

    again = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=clone, env=env, capture_output=True,
                           text=True, timeout=600)
    assert ran(again.stdout) == [] and "Data and pipelines are up to date." in again.stdout
    with sqlite3.connect(clone / "mlflow.db") as db:
        assert db.execute("select count(*) from runs").fetchone()[0] == 1
