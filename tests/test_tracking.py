"""The MLflow mirror (tracking/, stages/mirror.py), proven with real parts.

Runs are read back through ``MlflowClient`` and compared, value by value, with params.yaml
and the files under metrics/ -- using this file's own flattening, not the module's. The slow
tests run a real ``mlflow server`` on 127.0.0.1 (sqlite backend, local artifacts) and the real
pipeline in a temporary copy of the repository, with a stub in place of the model stages
(a seeded SeedCNN in models/best, metrics, a DVCLive curve and a figure).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import yaml

from lifecycle.core.params import load_params
from lifecycle.evaluation import interval_keys, with_intervals
from lifecycle.models import ModelSpec, SeedCNN, load_model, save_model, to_model_input
from lifecycle.selection import selection_metrics
from tracking import flavours, mirror, provenance, snapshot, spool, store

from .conftest import ROOT, env_with_venv
from .servers import free_port, stop_process_group, wait_until_up

MLFLOW = str(Path(sys.executable).parent / "mlflow")
SERVER_START_S = 120     # bounded waits: a server or model server that is not up by then fails the test
SERVE_START_S = 180


# ----------------------------------------------------------------------------- expectations


def expected_params(document: dict, prefix: str = "") -> dict[str, str]:
    """params.yaml flattened as the README promises: dotted keys, strings as is, the rest JSON."""
    flat = {}
    for key, value in document.items():
        if isinstance(value, dict) and value:
            flat.update(expected_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return flat


def json_numbers(document, path=()):
    if isinstance(document, dict):
        for key, value in document.items():
            yield from json_numbers(value, (*path, key))
    elif isinstance(document, (int, float)):
        yield ".".join(path), float(document)


def expected_metrics(root: Path) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]]]:
    """Scalars of every metrics JSON (``<file>/<dotted.key>``) and DVCLive curves (``<dir>/<name>``)."""
    scalars, curves = {}, {}
    for path in sorted((root / "metrics").rglob("*.json")):
        file_part = path.relative_to(root / "metrics").with_suffix("").as_posix()
        for key, value in json_numbers(json.loads(path.read_text())):
            scalars[f"{file_part}/{key}"] = value
    for path in sorted((root / "metrics").rglob("*.tsv")):
        relative = path.relative_to(root / "metrics").with_suffix("").as_posix()
        if "/plots/metrics/" not in relative:
            continue
        folder, name = relative.split("/plots/metrics/")
        lines = path.read_text().split("\n")[1:]
        curves[f"{folder}/{name}"] = [(int(line.split("\t")[0]), float(line.split("\t")[1])) for line in lines if line]
    return scalars, curves


def runs_of(client, experiment=store.EXPERIMENT):
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def assert_run_matches_files(client, run_id: str, root: Path, tmp_path: Path) -> None:
    """The run holds exactly what params.yaml (but the keys that are no part of a state), metrics/, plots/ and models/best say."""
    run = client.get_run(run_id)
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert run.data.params == expected_params({key: value for key, value in params.items() if key not in snapshot.NOT_STATE_PARAMS})

    scalars, curves = expected_metrics(root)
    assert set(run.data.metrics) == set(scalars) | set(curves)
    for key, value in scalars.items():
        assert run.data.metrics[key] == value, key
        assert [m.step for m in client.get_metric_history(run_id, key)] == [0], key
    for key, points in curves.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert history == points, key

    destination = tmp_path / f"artifacts-{run_id}-{time.monotonic_ns()}"
    destination.mkdir()
    downloaded = Path(client.download_artifacts(run_id, "", str(destination)))
    for folder in ("metrics", "plots"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                relative = path.relative_to(root)
                assert (downloaded / relative).read_bytes() == path.read_bytes(), relative
    assert (downloaded / "params.yaml").read_bytes() == (root / "params.yaml").read_bytes()
    assert (downloaded / "dvc.lock").is_file() == (root / "dvc.lock").is_file()

    if (root / "models/best/model.json").is_file():
        assert_registered_model(client, run_id, root / "models/best", tmp_path)


def assert_registered_model(client, run_id: str, folder: Path, tmp_path: Path) -> None:
    import mlflow

    versions = client.search_model_versions(f"name = '{store.REGISTERED_MODEL}' and run_id = '{run_id}'")
    assert len(versions) == 1
    model_uri = f"models:/{store.REGISTERED_MODEL}/{versions[0].version}"
    destination = tmp_path / f"model-{run_id}-{time.monotonic_ns()}"
    destination.mkdir()
    with store.global_store(client.tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(destination)))
    spec = json.loads((folder / "model.json").read_text())
    assert (local / "extra_files" / "model.json").read_bytes() == (folder / "model.json").read_bytes()
    signature = yaml.safe_load((local / "MLmodel").read_text())["signature"]
    size, classes = spec["image_size"], len(spec["classes"])
    def tensor(shape):
        return [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": shape}}]

    assert json.loads(signature["inputs"]) == tensor([-1, 3, size, size])
    assert json.loads(signature["outputs"]) == tensor([-1, classes])
    assert (local / "input_example.json").is_file()

    # The logged model carries the run's metrics at step 0 (MLflow's model page shows them),
    # linked by the sink itself rather than by MLflow reading back every metric's history.
    step_zero = {(key, point.value) for key in client.get_run(run_id).data.metrics
                 for point in client.get_metric_history(run_id, key) if point.step == 0}
    model_id = versions[0].source.removeprefix("models:/")
    linked = {(metric.key, metric.value) for metric in client.get_logged_model(model_id).metrics or []
              if metric.run_id == run_id}
    assert step_zero and linked == step_zero

    pyfunc = mlflow.pyfunc.load_model(str(local))
    model, _ = load_model(folder)
    batch = flavours.example_input(size, tuple(spec["mean"]), tuple(spec["std"]))
    batch = np.concatenate([batch, batch[:1] * 0.5, batch[:1] - 0.3]).astype(np.float32)  # 4 images: any batch size
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(np.asarray(pyfunc.predict(batch)), expected, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty, fully migrated MLflow sqlite database (migrating takes seconds; copy this one)."""
    from mlflow import MlflowClient

    database = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{database}").search_experiments()
    return database


def write_model_state(root: Path, lr: float = 0.01, seed: int = 0, image_size: int = 32) -> None:
    """What the model stages will write: models/best, metrics (JSON, DVCLive), a figure."""
    torch.manual_seed(seed)
    spec = ModelSpec("seed_cnn", ["cat", "dog"], image_size, arguments={"channels": [4]})
    save_model(SeedCNN(image_size, 2, (4,)), spec, root / "models/best")
    (root / "metrics/select/plots/metrics/val").mkdir(parents=True, exist_ok=True)
    scores = {"accuracy": 0.5 + lr, "precision": 0.5, "recall": 0.5, "f1": 0.25, "roc_auc": 0.5}
    split = with_intervals(scores, {key: scores[name] + step for name in scores
                                    for key, step in zip(interval_keys(name), (-0.125, 0.125))})
    against = {"model": "finetune", "paired_test": "mcnemar_exact", "p_value": 0.5, "discordant": 4,
               "beyond_noise": False}
    (root / "metrics/select.json").write_text(  # the shape select writes
        json.dumps(selection_metrics("train", {"val": split, "test": split}, against), indent=2)
    )
    losses = [1.0, 0.5 - lr, 0.25 - lr]
    (root / "metrics/select/plots/metrics/val/loss.tsv").write_text(
        "step\tloss\n" + "".join(f"{step}\t{loss}\n" for step, loss in enumerate(losses))
    )
    (root / "metrics/select/metrics.json").write_text(json.dumps({"step": 2, "val": {"loss": losses[-1]}}))
    (root / "plots").mkdir(exist_ok=True)
    (root / "plots/confusion.svg").write_text(f'<svg xmlns="http://www.w3.org/2000/svg"><text>{lr}</text></svg>\n')


@pytest.fixture
def workspace(tmp_path: Path, empty_store: Path) -> Path:
    """A committed git + DVC folder with the project's params.yaml and a full pipeline state."""
    root = tmp_path / "workspace"
    root.mkdir()
    (root / ".dvc").mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update({"lr": 0.01, "epochs": 2})
    params["train"]["channels"] = [4]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    load_params(root / "params.yaml")  # what the schema accepts, as a real workspace's params
    (root / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/.mlflow-spool/\n")
    write_model_state(root)
    for line in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.com"], ["config", "user.name", "t"],
                 ["add", "-A"], ["commit", "-qm", "state"]):
        subprocess.run(["git", *line], cwd=root, check=True, capture_output=True)
    shutil.copy(empty_store, root / "mlflow.db")
    return root


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 with a sqlite backend and local artifacts in ``folder``."""

    def __init__(self, folder: Path, empty_store: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(empty_store, folder / "server.db")

    def start(self) -> None:
        log = self.folder / "server.log"
        command = [
            MLFLOW, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
            "--artifacts-destination", str(self.folder / "artifacts"),
        ]
        with open(log, "ab") as handle:
            self.process = subprocess.Popen(command, cwd=self.folder, stdout=handle, stderr=subprocess.STDOUT,
                                            env=env_with_venv(), start_new_session=True)
        wait_until_up(self.process, f"{self.uri}/health", SERVER_START_S, log)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
            self.process = None


@pytest.fixture
def mlflow_server(tmp_path: Path, empty_store: Path):
    server = MlflowServer(tmp_path / "server", empty_store)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def client_for(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# ----------------------------------------------------------------------------- where


def test_real_root_of_a_dvc_temporary_copy(tmp_path: Path):
    repo = tmp_path / "repo"
    copy = repo / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12cd"
    (copy / ".dvc").mkdir(parents=True)
    assert provenance.real_root(repo, environ={}) == repo
    assert provenance.real_root(copy, environ={}) == repo                      # from the layout alone
    assert provenance.real_root(copy, environ={"DVC_ROOT": str(repo)}) == repo  # what DVC says
    other = tmp_path / "other"
    (other / ".dvc").mkdir(parents=True)
    assert provenance.real_root(repo, environ={"DVC_ROOT": str(other)}) == repo  # a stray DVC_ROOT is ignored
    assert store.tracking_uri(copy, environ={}) == f"sqlite:///{repo}/mlflow.db"
    assert spool.spool_dir(copy, environ={}) == repo / ".mlflow-spool"
    assert store.tracking_uri(copy, environ={"MLFLOW_TRACKING_URI": "http://team:5000"}) == "http://team:5000"
    assert store.local_artifact_location(f"sqlite:///{repo}/mlflow.db") == (repo / "mlartifacts").as_uri()


def test_mirror_gate_and_service_mean_one_store_also_from_an_experiments_temporary_copy(tmp_path: Path):
    """A queued experiment mirrors from <repo>/.dvc/tmp/exps/...; the gate and the server, run in
    <repo>, read what it wrote: every one of them resolves the store through tracking.store."""
    from tracking.registry import Registry

    repo = tmp_path / "repo"
    copy = repo / ".dvc" / "tmp" / "exps" / "run" / "tmpxy"
    (copy / ".dvc").mkdir(parents=True)
    default = f"sqlite:///{repo}/mlflow.db"
    assert store.tracking_uri(copy, environ={}) == store.tracking_uri(repo, environ={}) == default
    assert store.existing_store(repo, environ={}) is None  # the service: no store until the mirror made one
    (repo / "mlflow.db").touch()
    assert store.existing_store(copy, environ={}) == store.existing_store(repo, environ={}) == default
    team = {"MLFLOW_TRACKING_URI": "http://team:5000"}
    assert store.tracking_uri(copy, environ=team) == store.existing_store(repo, environ=team) == "http://team:5000"
    chosen = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/new.db"}  # named by the user: a store, even before it exists
    assert store.existing_store(repo, environ=chosen) == chosen["MLFLOW_TRACKING_URI"]
    assert Registry().store == store.tracking_uri()  # the gate's default is the same function's answer


def test_experiments_are_listed_by_dvc_with_their_names_and_baselines(tmp_path: Path):
    """provenance.experiment_refs asks DVC (Repo.experiments.ls), not git's refs/exps/ layout."""
    from .conftest import RepoCopy

    repo = RepoCopy(tmp_path / "repo")
    repo.path.mkdir()
    for line in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.email", "t@example.com"],
                 ["git", "config", "user.name", "t"]):
        repo.run(*line)
    repo.dvc("init", "-q")
    (repo.path / "params.yaml").write_text("lr: 0.1\n")
    repo.commit("baseline")
    baseline = repo.run("git", "rev-parse", "HEAD").stdout.strip()
    (repo.path / "params.yaml").write_text("lr: 0.2\n")
    repo.dvc("exp", "save", "-q", "-n", "saved-exp")
    [(commit, found)] = provenance.experiment_refs(repo.path).items()
    assert found == ("saved-exp", baseline) and commit != baseline
    assert provenance.revision_tags(repo.path, "saved-exp")[0] == commit


def test_a_mirror_waits_for_the_spools_lock_and_gives_up_after_its_wait(tmp_path: Path):
    """Held by another process (an older mirror's plain flock included), the lock is refused until released."""
    folder = tmp_path / "spool"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(folder / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with spool.spool_lock(folder, 0.5) as locked:
            assert not locked
        assert time.monotonic() - started >= 0.5
    finally:
        holder.kill()
        holder.wait()
    with spool.spool_lock(folder, 5) as locked:
        assert locked


def test_global_store_points_mlflow_at_a_store_for_a_while_and_restores_what_was_there(monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mlflow.set_tracking_uri(None)
    with store.global_store("sqlite:///elsewhere.db"):
        assert mlflow.get_tracking_uri() == mlflow.get_registry_uri() == "sqlite:///elsewhere.db"
        assert os.environ["MLFLOW_TRACKING_URI"] == os.environ["MLFLOW_REGISTRY_URI"] == "sqlite:///elsewhere.db"
    assert not mlflow.tracking.is_tracking_uri_set()
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    mlflow.set_tracking_uri("sqlite:///mine.db")  # a caller's own choice survives too
    try:
        with store.global_store("sqlite:///elsewhere.db"):
            pass
        assert mlflow.get_tracking_uri() == os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///mine.db"
    finally:
        mlflow.set_tracking_uri(None)


def test_real_root_of_this_repository_is_its_folder():
    assert provenance.real_root(environ={}) == ROOT
    assert store.tracking_uri(environ={}) == f"sqlite:///{ROOT}/mlflow.db"


def test_names_of_params_and_metrics():
    assert snapshot.flatten_params({"seed": 1, "train": {"lr": 0.1, "channels": [8], "opt": {}}, "path": None}) == {
        "seed": "1", "train.lr": "0.1", "train.channels": "[8]", "train.opt": "{}", "path": "null",
    }
    document = {"test": {"accuracy": 0.5, "ok": True}, "name": "x", "losses": [3, 2],
                "history": [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]}
    assert snapshot.document_metrics(document, "evaluate/train") == {
        "evaluate/train/test.accuracy": [(0, 0.5)],
        "evaluate/train/test.ok": [(0, 1.0)],
        "evaluate/train/losses": [(0, 3.0), (1, 2.0)],
        "evaluate/train/history.loss": [(1, 0.5), (2, 0.25)],
    }
    assert snapshot.mlflow_key("evaluate@train/a+b//../c") == "evaluate_train/a_b/_/c"


def test_dvclive_curves_are_stepped_metrics(tmp_path: Path):
    curve = tmp_path / "metrics/train/plots/metrics/val/loss.tsv"
    curve.parent.mkdir(parents=True)
    curve.write_text("step\tloss\n0\t1.0\n1\t0.5\n")
    table = tmp_path / "metrics/tune/history.csv"
    table.parent.mkdir(parents=True)
    table.write_text("epoch,loss,accuracy\n1,0.9,0.6\n2,0.7,0.8\n")
    files = ["metrics/train/plots/metrics/val/loss.tsv", "metrics/tune/history.csv"]
    assert snapshot.read_metrics(tmp_path, files) == {
        "train/val/loss": [(0, 1.0), (1, 0.5)],
        "tune/history/loss": [(1, 0.9), (2, 0.7)],
        "tune/history/accuracy": [(1, 0.6), (2, 0.8)],
    }


# ----------------------------------------------------------------------------- the sqlite default


def test_mirror_into_the_default_sqlite_store_holds_what_the_files_say(workspace: Path, tmp_path: Path):
    environment = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    state = snapshot.pipeline_state(workspace)
    fingerprint = {"mode": "native", "device": "cpu", "cpu_vendor": "AuthenticAMD", "cpu_model": "AMD EPYC 9654"}
    (workspace / ".numerics").mkdir()
    (workspace / ".numerics" / "train.json").write_text(json.dumps({"stage": "train", **fingerprint}))
    assert snapshot.pipeline_state(workspace) == state  # the machine is not part of the state
    report = mirror.mirror_workspace(workspace, environ={})
    assert {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")} == environment  # none left behind
    assert report.kept == [] and len(report.sent) == 1
    assert (workspace / "mlartifacts").is_dir() and not (workspace / "mlruns").exists()
    assert list((workspace / ".mlflow-spool").iterdir()) == [workspace / ".mlflow-spool" / ".lock"]

    client = client_for(f"sqlite:///{workspace}/mlflow.db")
    [run] = runs_of(client)
    assert run.info.run_id == report.sent[0][1]
    assert run.info.artifact_uri.startswith((workspace / "mlartifacts").as_uri())
    assert_run_matches_files(client, run.info.run_id, workspace, tmp_path)

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True, text=True).stdout.strip()
    tags = run.data.tags
    assert tags[provenance.TAG_COMMIT] == head and tags["mlflow.source.git.commit"] == head
    assert tags[provenance.TAG_BRANCH] == "main" and tags[provenance.TAG_DIRTY] == "false"
    assert tags[provenance.TAG_STATE] == snapshot.pipeline_state(workspace)
    assert json.loads(tags["numerics.train"]) == fingerprint
    assert run.info.run_name == f"main@{head[:7]}"
    version = client.get_model_version_by_alias(store.REGISTERED_MODEL, store.CANDIDATE)
    assert version.run_id == run.info.run_id


def test_the_same_state_mirrored_again_updates_its_run_and_keeps_every_experiment_name(
    workspace: Path, tmp_path: Path
):
    environ = {"DVC_EXP_NAME": "bold-lr"}
    mirror.mirror_workspace(workspace, environ=environ)
    client = client_for(f"sqlite:///{workspace}/mlflow.db")
    [first] = runs_of(client)
    (workspace / "README.md").write_text("notes\n")                      # a commit that changes no mirrored file
    subprocess.run(["git", "add", "README.md"], cwd=workspace, check=True)
    subprocess.run(["git", "commit", "-qm", "notes"], cwd=workspace, check=True)
    again = mirror.mirror_workspace(workspace, environ={})   # committed since, and no DVC_EXP_NAME now
    assert again.kept == []

    [run] = runs_of(client)
    assert run.info.run_id == first.info.run_id
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True, text=True).stdout.strip()
    assert run.data.tags[provenance.TAG_COMMIT] == head                      # updated
    assert run.data.tags[provenance.TAG_EXP_NAME] == "bold-lr" == run.info.run_name  # never erased
    assert_run_matches_files(client, run.info.run_id, workspace, tmp_path)  # no metric point twice
    experiment = client.get_experiment_by_name(store.EXPERIMENT).experiment_id
    assert sorted(m.name for m in client.search_logged_models([experiment])) == ["image-model", "model"]  # once each
    assert len(client.search_model_versions(f"name = '{store.REGISTERED_MODEL}'")) == 1

    report = mirror.mirror_workspace(workspace, environ={"DVC_EXP_NAME": "calm-lr"})  # a second experiment, same state
    [run] = runs_of(client)
    assert report.sent[0][0] == "calm-lr (in run 'bold-lr', this state's first name)"  # what stages.mirror prints
    assert run.info.run_name == "bold-lr" == run.data.tags[provenance.TAG_EXP_NAME]  # not renamed
    assert run.data.tags[provenance.TAG_EXP_NAMES] == "bold-lr calm-lr"              # both findable by name
    assert run.data.tags[provenance.TAG_COMMITS].split() == [first.data.tags[provenance.TAG_COMMIT], head]
    for name in ("bold-lr", "calm-lr"):
        [found] = client.search_runs([experiment], filter_string=f"tags.`dvc.exp_names` LIKE '%{name}%'")
        assert found.info.run_id == first.info.run_id

    write_model_state(workspace, lr=0.02, seed=1)                          # a new state: a new run
    mirror.mirror_workspace(workspace, environ={})
    runs = runs_of(client)
    assert len(runs) == 2
    newest = next(r for r in runs if r.info.run_id != first.info.run_id)
    assert_run_matches_files(client, newest.info.run_id, workspace, tmp_path)
    assert client.get_model_version_by_alias(store.REGISTERED_MODEL, store.CANDIDATE).run_id == newest.info.run_id


def test_an_unreadable_metrics_file_never_fails_the_mirror(workspace: Path):
    (workspace / "metrics/broken.json").write_text("{not json")
    report = mirror.mirror_workspace(workspace, environ={})
    assert report.sent == [] and len(report.kept) == 1
    assert "JSONDecodeError" in report.warning()
    assert len(spool.spool_entries(workspace / ".mlflow-spool")) == 1   # kept, to be sent once fixed


def test_a_server_that_is_down_leaves_the_state_in_the_spool_with_one_warning(repo_copy, tmp_path: Path, monkeypatch):
    repo = repo_copy()
    write_model_state(repo.path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nobody listens there
    result = repo.run(sys.executable, "-m", "stages.mirror", timeout=300)
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: could not mirror 1 pipeline run(s)"), result.stderr
    assert "connection refused" in warnings[0] and "python -m stages.mirror --flush" in warnings[0]
    [entry] = spool.spool_entries(repo.path / ".mlflow-spool")
    assert (entry.files / "models/best/model.pt").read_bytes() == (repo.path / "models/best/model.pt").read_bytes()
    flush = repo.run(sys.executable, "-m", "stages.mirror", "--flush", check=False, timeout=300)
    assert flush.returncode == 1 and "warning: could not mirror 1" in flush.stderr


# ----------------------------------------------------------------------------- real server, real pipeline

STUB = '''"""Test stub of the model stages: a seeded SeedCNN in models/best, metrics, a curve, a figure."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lifecycle.core.params import read_params_file
from tests.test_tracking import write_model_state

params = read_params_file()
write_model_state(Path("."), lr=params["lr"], seed=params["seed"], image_size=params["featurize"]["image_size"])
'''


def add_model_stub(repo, stub: str = STUB) -> None:
    """A stub stage (``stub``, the script's text) writes what the model stages write, in seconds, in place of them."""
    (repo.path / "stages/model_stub.py").write_text(stub)
    pipeline = yaml.safe_load((repo.path / "dvc.yaml").read_text())
    pipeline.pop("plots", None)  # the model stages' curves, which the stub does not draw
    stages = pipeline["stages"]
    for name in ("pretrain", "train", "finetune", "frozen_features", "transfer", "tune", "evaluate", "select", "predict"):
        stages.pop(name, None)
    mirror_stage = stages.pop("mirror")
    stages["model_stub"] = {
        "cmd": "python -m stages.model_stub",
        "deps": ["stages/model_stub.py", "data/processed/train_balanced.npz"],
        "params": ["lr", "seed", "featurize.image_size"],
        "outs": ["models/best", {"plots/confusion.svg": {"cache": False}}, {"metrics/select": {"cache": False}}],
        "metrics": [{"metrics/select.json": {"cache": False}}],
    }
    mirror_stage["deps"] += [dep for dep in ("plots", "models/best") if dep not in mirror_stage["deps"]]
    stages["mirror"] = mirror_stage
    (repo.path / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    repo.commit("model stub")


@pytest.mark.slow
def test_pipeline_with_the_server_down_spools_and_flush_sends_exactly_the_files(
    repo_copy, mlflow_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    repo = repo_copy({"lr": 0.01})
    add_model_stub(repo)
    repo.dvc("repro")
    client = client_for(mlflow_server.uri)
    [first] = runs_of(client)
    assert_run_matches_files(client, first.info.run_id, repo.path, tmp_path)

    mlflow_server.stop()
    repo.set_params({"lr": 0.02})
    result = repo.dvc("repro")                                           # succeeds, with one warning
    assert "warning: could not mirror 1 pipeline run(s) to MLflow" in result.stderr
    assert len(spool.spool_entries(repo.path / ".mlflow-spool")) == 1

    mlflow_server.start()
    flush = repo.run(sys.executable, "-m", "stages.mirror", "--flush", timeout=600)
    assert "warning" not in flush.stderr
    assert spool.spool_entries(repo.path / ".mlflow-spool") == []
    runs = runs_of(client)
    assert len(runs) == 2
    second = next(r for r in runs if r.info.run_id != first.info.run_id)
    assert_run_matches_files(client, second.info.run_id, repo.path, tmp_path)
    assert client.get_model_version_by_alias(store.REGISTERED_MODEL, store.CANDIDATE).run_id == second.info.run_id

    repo.commit("lr 0.02")                                                # backfill: the same state, the same run
    repo.run(sys.executable, "-m", "stages.mirror", "--rev", "HEAD", timeout=600)
    assert len(runs_of(client)) == 2
    head = repo.run("git", "rev-parse", "HEAD").stdout.strip()
    updated = client.get_run(second.info.run_id)
    assert updated.data.tags[provenance.TAG_COMMIT] == head and updated.data.tags[provenance.TAG_DIRTY] == "false"
    assert_run_matches_files(client, second.info.run_id, repo.path, tmp_path)


def wait_for_queue(repo, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = repo.dvc("queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return
        time.sleep(3)
    raise AssertionError(f"the DVC queue did not finish within {seconds} s:\n{status}")


@pytest.mark.slow
def test_temp_and_queued_experiments_mirror_into_the_real_root(repo_copy, tmp_path, default_mlflow_store):
    repo = repo_copy({"lr": 0.01})
    add_model_stub(repo)
    repo.dvc("repro")
    repo.commit("baseline")
    baseline = repo.run("git", "rev-parse", "HEAD").stdout.strip()

    repo.dvc("exp", "run", "--temp", "-n", "temp-exp", "-S", "lr=0.05")
    repo.dvc("exp", "run", "--queue", "-n", "queued-exp", "-S", "lr=0.07")
    repo.dvc("queue", "start")
    wait_for_queue(repo)

    client = client_for(f"sqlite:///{repo.path}/mlflow.db")               # the real root's default store
    runs = {run.data.tags.get(provenance.TAG_EXP_NAME, ""): run for run in runs_of(client)}
    assert set(runs) == {"", "temp-exp", "queued-exp"}
    assert not list((repo.path / ".dvc/tmp").rglob("mlflow.db"))
    for name, lr in (("temp-exp", 0.05), ("queued-exp", 0.07)):
        run = runs[name]
        assert run.data.params["lr"] == str(lr)
        assert run.data.tags[provenance.TAG_COMMIT] == baseline == run.data.tags[provenance.TAG_BASELINE]
        assert run.data.tags[provenance.TAG_DIRTY] == "true"               # its params are not the commit's
        assert run.data.metrics["select/best.test.accuracy"] == pytest.approx(0.5 + lr, abs=1e-12)

    repo.run(sys.executable, "-m", "stages.mirror", "--all-experiments", timeout=600)  # backfill: same runs
    after = {run.data.tags.get(provenance.TAG_EXP_NAME, ""): run for run in runs_of(client)}
    assert len(runs_of(client)) == 3
    exp_ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/temp-exp"
    exp_commit = repo.run("git", "rev-parse", exp_ref).stdout.strip()
    assert after["temp-exp"].info.run_id == runs["temp-exp"].info.run_id
    assert after["temp-exp"].data.tags[provenance.TAG_COMMIT] == exp_commit
    assert after["temp-exp"].data.tags[provenance.TAG_DIRTY] == "false"


@pytest.mark.slow
def test_queued_experiments_of_one_state_share_its_run_and_each_is_found_by_name(repo_copy, default_mlflow_store):
    """One run per pipeline state; a second experiment with the same state, and one identical
    to main, add their names to that run instead of renaming it or going missing."""
    repo = repo_copy({"lr": 0.01})
    add_model_stub(repo)
    repo.dvc("repro")
    repo.commit("baseline")
    client = client_for(f"sqlite:///{repo.path}/mlflow.db")
    [main_run] = runs_of(client)

    repo.dvc("exp", "run", "--queue", "-n", "first-lr", "-S", "lr=0.05")
    repo.dvc("exp", "run", "--queue", "-n", "again-lr", "-S", "lr=0.05")   # the same state as first-lr
    repo.dvc("exp", "run", "--queue", "-n", "like-main")                   # the same state as main
    repo.dvc("queue", "start")
    wait_for_queue(repo)

    runs = {run.info.run_id: run for run in runs_of(client)}
    assert len(runs) == 2
    main_after = runs.pop(main_run.info.run_id)
    [experiment_run] = runs.values()
    assert experiment_run.data.params["lr"] == "0.05"
    assert experiment_run.info.run_name == "first-lr" == experiment_run.data.tags[provenance.TAG_EXP_NAME]
    assert experiment_run.data.tags[provenance.TAG_EXP_NAMES].split() == ["first-lr", "again-lr"]
    assert main_after.info.run_name == main_run.info.run_name
    assert main_after.data.tags[provenance.TAG_EXP_NAMES].split() == ["like-main"]
    experiment = client.get_experiment_by_name(store.EXPERIMENT).experiment_id
    for name, run_id in (("first-lr", experiment_run.info.run_id), ("again-lr", experiment_run.info.run_id),
                         ("like-main", main_run.info.run_id)):
        [found] = client.search_runs([experiment], filter_string=f"tags.`dvc.exp_names` LIKE '%{name}%'")
        assert found.info.run_id == run_id


@pytest.mark.slow
def test_mlflow_models_serve_answers_like_the_model_in_process(workspace: Path, tmp_path: Path):
    report = mirror.mirror_workspace(workspace, environ={})
    assert report.kept == [], report.warning()
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**env_with_venv(), "MLFLOW_TRACKING_URI": f"sqlite:///{workspace}/mlflow.db", "PYTHONUNBUFFERED": "1"}
    command = [MLFLOW, "models", "serve", "-m", f"models:/{store.REGISTERED_MODEL}@{store.CANDIDATE}",
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/ping", SERVE_START_S, log)
        model, spec = load_model(workspace / "models/best")
        rng = np.random.default_rng(7)
        images = rng.integers(0, 256, size=(3, spec.image_size, spec.image_size, 3), dtype=np.uint8)
        batch = to_model_input(images, spec.mean, spec.std).numpy()
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": batch.tolist()}, timeout=60)
        assert answer.status_code == 200, answer.text
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(np.asarray(answer.json()["predictions"]), expected, rtol=0, atol=1e-5)
    finally:
        stop_process_group(process)


NETWORK_PROBE = """
import json, sys
from pathlib import Path
import requests
calls = []
original = requests.Session.request
def recording(self, method, url, *args, **kwargs):
    calls.append(url)
    return original(self, method, url, *args, **kwargs)
requests.Session.request = recording
from tracking import mirror
report = mirror.mirror_workspace(Path(sys.argv[1]), environ={})
print(json.dumps({"sent": len(report.sent), "calls": calls}))
"""


@pytest.mark.slow
def test_a_mirror_into_the_sqlite_store_calls_no_network(workspace: Path):
    """No request leaves the machine: MLflow's usage telemetry would fetch its config on a logged
    model. In a plain process, since MLflow turns telemetry off by itself under pytest."""
    environ = {k: v for k, v in env_with_venv().items() if not k.startswith(("PYTEST", "MLFLOW_", "CI"))}
    result = subprocess.run([sys.executable, "-c", NETWORK_PROBE, str(workspace)], cwd=ROOT, env=environ,
                            capture_output=True, text=True, timeout=600, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"sent": 1, "calls": []}


def test_a_model_logged_from_the_same_files_is_linked_to_the_next_run_not_exported_again(
    workspace: Path, tmp_path: Path
):
    mirror.mirror_workspace(workspace, environ={})
    write_model_state(workspace, lr=0.03)        # the same model (seed 0), other metrics: a new state
    report = mirror.mirror_workspace(workspace, environ={})
    assert report.kept == [] and len(report.sent) == 1
    client = client_for(f"sqlite:///{workspace}/mlflow.db")
    experiment = client.get_experiment_by_name(store.EXPERIMENT).experiment_id
    models = client.search_logged_models([experiment])                   # each flavour exported once
    assert sorted(m.name for m in models) == sorted(flavours.FLAVOURS)
    logged = next(m for m in models if m.name == flavours.MODEL_NAME)
    versions = client.search_model_versions(f"name = '{store.REGISTERED_MODEL}'")
    assert sorted(v.source for v in versions) == [f"models:/{logged.model_id}"] * 2
    newest = report.sent[0][1]
    assert client.get_model_version_by_alias(store.REGISTERED_MODEL, store.CANDIDATE).run_id == newest
    linked = sorted(output.model_id for output in client.get_run(newest).outputs.model_outputs)
    assert linked == sorted(m.model_id for m in models)
    assert_run_matches_files(client, newest, workspace, tmp_path)         # served, signed, its metrics linked


def test_a_flavour_that_carries_code_is_logged_anew_when_that_code_changes(tmp_path: Path):
    model, code = tmp_path / "model", tmp_path / "code"
    model.mkdir(), code.mkdir()
    (model / "model.pt").write_bytes(b"weights")
    (code / "inference.py").write_text("SCALE = 1\n")
    (code / "notes.txt").write_text("not code\n")
    carried = flavours.model_digest(model, (code,))
    assert flavours.model_digest(model) != carried                       # the code is part of it
    (code / "notes.txt").write_text("edited\n")
    assert flavours.model_digest(model, (code,)) == carried              # only Python files count
    (code / "inference.py").write_text("SCALE = 2\n")
    assert flavours.model_digest(model, (code,)) != carried              # an edit logs the model again
    assert flavours.FLAVOURS[flavours.IMAGE_MODEL_NAME].code                 # the image pyfunc carries lifecycle/
