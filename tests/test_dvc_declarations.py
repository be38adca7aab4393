"""What dvc.yaml declares, as DVC itself reads it, in small repositories built from its own sections.

- The promotion gate's settings (``promote.*``) are not part of a model's state: changing them
  leaves the mirror stage up to date and the pipeline-state id unchanged (a changed model key
  does neither, so the test can fail).
- The selected model is the artifact ``cats-vs-dogs``: a fresh clone with a folder remote gets
  it with ``dvc artifacts get``, and ``dvc.api.artifacts_show`` says where it is.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tracking.snapshot import NOT_STATE_PARAMS, pipeline_state

from .conftest import ROOT, RepoCopy

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())
VERSION_TAG = "cats-vs-dogs@v1.0.0"  # a GTO registration tag, what `gto register cats-vs-dogs` writes


def small_repo(path: Path, pipeline: dict) -> RepoCopy:
    """A committed git + DVC repository holding the project's params.yaml and ``pipeline`` as dvc.yaml."""
    path.mkdir(parents=True)
    repo = RepoCopy(path)
    repo.run("git", "init", "-q", "-b", "main")
    repo.run("git", "config", "user.email", "tests@example.com")
    repo.run("git", "config", "user.name", "tests")
    repo.dvc("init", "-q")
    repo.dvc("config", "core.analytics", "false")
    shutil.copy(ROOT / "params.yaml", path / "params.yaml")
    (path / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return repo


def stage_status(repo: RepoCopy, stage: str) -> dict:
    return json.loads(repo.dvc("status", "--json", stage).stdout or "{}")


def test_the_mirror_depends_on_every_params_key_but_the_gates():
    """A key added to params.yaml is part of the mirrored state unless it is the gate's."""
    keys = list(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert PIPELINE["stages"]["mirror"]["params"] == [key for key in keys if key not in NOT_STATE_PARAMS]


def test_the_gates_settings_change_neither_the_mirror_stage_nor_the_state_id(tmp_path: Path):
    mirror = {"cmd": f"{sys.executable} -c \"open('receipt', 'w').write('x')\"",
              "params": PIPELINE["stages"]["mirror"]["params"], "outs": [{"receipt": {"cache": False}}]}
    repo = small_repo(tmp_path / "repo", {"stages": {"mirror": mirror}})
    repo.dvc("repro", "-q")
    state = pipeline_state(repo.path)
    assert stage_status(repo, "mirror") == {}

    repo.set_params({"promote": {"margin": 0.5, "alpha": 0.01, "metric": "f1"}})
    assert stage_status(repo, "mirror") == {}          # no new MLflow run, no new registry version
    assert pipeline_state(repo.path) == state

    repo.set_params({"lr": 0.123})                      # a model's key: the same checks now see a new state
    assert "mirror" in stage_status(repo, "mirror")
    assert pipeline_state(repo.path) != state


def test_a_fresh_clone_gets_the_selected_model_as_the_artifact_cats_vs_dogs(tmp_path: Path):
    origin, storage = tmp_path / "origin.git", tmp_path / "storage"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    storage.mkdir()
    write_model = "import pathlib; p = pathlib.Path('models/best'); p.mkdir(parents=True, exist_ok=True); " \
                  "(p / 'model.pt').write_bytes(b'weights'); (p / 'model.json').write_text('{}')"
    select = {"cmd": f"{sys.executable} -c \"{write_model}\"", "outs": ["models/best"]}
    work = small_repo(tmp_path / "work", {"stages": {"select": select}, "artifacts": PIPELINE["artifacts"]})
    work.dvc("remote", "add", "-d", "storage", str(storage))
    work.dvc("repro", "-q")
    work.commit("the selected model")
    work.run("git", "tag", "-a", VERSION_TAG, "-m", "registered")
    work.run("git", "remote", "add", "origin", str(origin))
    work.run("git", "push", "-q", "origin", "main", "--tags")
    work.dvc("push", "-q")
    shutil.rmtree(work.path)                            # the model now lives in git + the folder remote only

    subprocess.run(["git", "clone", "-q", str(origin), str(tmp_path / "clone")], check=True, capture_output=True)
    clone = RepoCopy(tmp_path / "clone")
    assert not (clone.path / "models" / "best").exists()
    clone.dvc("artifacts", "get", ".", "cats-vs-dogs", "-o", "fetched")
    assert (clone.path / "fetched" / "model.pt").read_bytes() == b"weights"
    assert (clone.path / "fetched" / "model.json").read_text() == "{}"

    shown = clone.run(sys.executable, "-c", "import dvc.api, json; "
                      "print(json.dumps(dvc.api.artifacts_show('cats-vs-dogs', repo='.')))").stdout
    head = clone.run("git", "rev-parse", "HEAD").stdout.strip()
    assert json.loads(shown) == {"rev": head, "path": "models/best"}
