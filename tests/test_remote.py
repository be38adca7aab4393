"""A team shares outputs and experiments through a real DVC remote (slow).

One pipeline run, made once for the module by "alice" in a tiny copy of the repository,
is pushed to a bare git repository (``origin``) and a local-folder DVC remote (``storage``)
with ``python scripts/remote.py push`` (``dvc push --run-cache``). Every test then works in
fresh ``git clone``s of origin, as a colleague or CI would:

1. a clone gets every output with ``dvc pull --run-cache`` and reproduces nothing; the one
   stage its ``dvc repro`` runs is ``mirror``, which records the same pipeline state in the
   team's MLflow store, into the same run (its receipt is per clone, gitignored);
2. an experiment pushed from one clone (``dvc exp push``) is pulled, applied and reproduced
   (retrained, byte for byte) in another, and a third, fresh clone gets the experiment's
   results from ``dvc exp run --pull`` out of the team's run-cache, without training;
3. when the remote cannot be reached, the command says so in one sentence and loses nothing:
   no file appears where the share should be mounted, no half-written output or remote
   object, the cache intact, and the same command succeeds once the remote is back.

All clones share one MLflow store (``MLFLOW_TRACKING_URI``, a sqlite file standing in for the
team's tracking server).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tracking.provenance import TAG_COMMIT, TAG_COMMITS, TAG_STATE

from .conftest import ROOT, RepoCopy, env_with_venv, make_repo_copy
from .test_tracking import client_for, runs_of

STAGES = ["ingest", "preprocess", "impute", "featurize", "split", "synthesize", "augment", "eda", "visualize",
          "predict", "tune", "pretrain", "train", "finetune", "frozen_features", "transfer", "evaluate@train",
          "evaluate@finetune", "evaluate@transfer", "select", "mirror"]
RECEIPT = ".mlflow-receipt.json"
REMOTE_SCRIPT = str(ROOT / "scripts" / "remote.py")

pytestmark = pytest.mark.slow  # every test here runs DVC and git end to end (minutes)


class Clone(RepoCopy):
    """A working copy whose commands all see the team's environment (its MLflow store)."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        super().__init__(path)
        self.env = env

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        result = subprocess.run(list(args), cwd=self.path, env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def remote(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``python scripts/remote.py ...``: the documented way to push and pull."""
        return self.run(sys.executable, REMOTE_SCRIPT, *args, check=check)

    def status(self) -> dict:
        return json.loads(self.dvc("status", "--json").stdout)


@dataclasses.dataclass
class Team:
    root: Path
    origin: Path             # the bare git repository every clone pushes to and pulls from
    storage: Path            # the local-folder DVC remote (a shared NFS folder, say)
    tracking_uri: str        # the team's MLflow store
    env: dict[str, str]
    alice: Clone             # the clone that ran the pipeline and pushed it

    def clone(self, destination: Path) -> Clone:
        subprocess.run(["git", "clone", "-q", str(self.origin), str(destination)], check=True, capture_output=True)
        clone = Clone(destination, self.env)
        clone.run("git", "config", "user.email", "tests@example.com")
        clone.run("git", "config", "user.name", "tests")
        return clone


def cached_outputs(root: Path) -> list[str]:
    """Every output dvc.lock records that DVC caches: the rest (metrics, plots) is in git, the receipt nowhere."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    in_git = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    found = {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    return sorted(path for path in found - {RECEIPT}
                  if not any(name == path or name.startswith(path + "/") for name in in_git))


def tree(path: Path) -> dict[str, bytes]:
    """A file or folder as {relative path: bytes}."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def ran(output: str) -> set[str]:
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


def leftovers(root: Path) -> list[Path]:
    """Temporary files of interrupted writes (DVC's and ours), outside git's own folder."""
    return [p for p in root.rglob("*.tmp") if ".git" not in p.relative_to(root).parts]


def remote_objects(storage: Path) -> list[Path]:
    return sorted(p for p in (storage / "files" / "md5").glob("*/*"))


def assert_every_remote_object_is_whole(storage: Path) -> None:
    """A content-addressed object's name is the md5 of its bytes: a partial object would not match."""
    for path in remote_objects(storage):
        if path.is_file():
            name = path.parent.name + path.name.removesuffix(".dir")
            assert hashlib.md5(path.read_bytes()).hexdigest() == name, path


def workspace_objects(clone: Clone) -> list[str]:
    """The cache objects (md5 names) the workspace's outputs are made of: what `dvc push` sends."""
    lock = yaml.safe_load((clone.path / "dvc.lock").read_text())
    cached = set(cached_outputs(clone.path))
    names = {out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", []) if out["path"] in cached}
    cache = clone.path / ".dvc" / "cache" / "files" / "md5"
    for name in [n for n in names if n.endswith(".dir")]:
        if (cache / name[:2] / name[2:]).is_file():
            names |= {entry["md5"] for entry in json.loads((cache / name[:2] / name[2:]).read_text())}
    return sorted(names)


def state_of(clone: Clone) -> str:
    return json.loads((clone.path / RECEIPT).read_text())["pipeline_state"]


def runs_of_state(tracking_uri: str, state: str) -> list:
    return [run for run in runs_of(client_for(tracking_uri)) if run.data.tags.get(TAG_STATE) == state]


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Team:
    root = tmp_path_factory.mktemp("team")
    origin, storage = root / "origin.git", root / "dvc-storage"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    storage.mkdir()
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {**env_with_venv(), "MLFLOW_TRACKING_URI": tracking_uri}

    copy = make_repo_copy(root / "alice")
    alice = Clone(copy.path, env)
    alice.dvc("remote", "add", "-d", "storage", str(storage))   # the README's one-time setup, committed
    alice.commit("DVC remote: the team's storage")
    assert ran(alice.dvc("repro").stdout) == set(STAGES)
    alice.commit("pipeline run")
    alice.run("git", "remote", "add", "origin", str(origin))
    alice.run("git", "push", "-q", "origin", "main")
    alice.remote("push")
    return Team(root, origin, storage, tracking_uri, env, alice)


def test_a_fresh_clone_pulls_every_output_and_its_repro_recomputes_nothing(team: Team, tmp_path: Path):
    bob = team.clone(tmp_path / "bob")
    outputs = cached_outputs(bob.path)
    assert {"data/raw", "data/processed/features.npz", "models/train", "models/best", "data/predictions"} <= set(outputs)
    assert not any((bob.path / out).exists() for out in outputs)

    bob.remote("pull")
    for out in outputs:
        assert tree(bob.path / out) == tree(team.alice.path / out), out

    # What a colleague's clone does about MLflow: the mirror's receipt is per clone (gitignored,
    # never in the remote), so the first `dvc repro` runs the mirror, and only the mirror. It
    # recomputes nothing: it records the same pipeline state in the MLflow store, and in the
    # team's store it finds the run alice's mirror made and updates it, never a second one.
    assert bob.status() == {"mirror": [{"changed outs": {RECEIPT: "deleted"}}]}
    first = bob.dvc("repro")
    assert ran(first.stdout) == {"mirror"}, first.stdout
    assert bob.status() == {}
    assert bob.run("git", "status", "--porcelain").stdout == ""
    assert state_of(bob) == state_of(team.alice)
    [run] = runs_of_state(team.tracking_uri, state_of(bob))        # one run for the state, both clones' mirrors
    head = bob.run("git", "rev-parse", "HEAD").stdout.strip()
    assert run.data.tags[TAG_COMMIT] == head and head in run.data.tags[TAG_COMMITS].split()  # bob's mirror updated it

    again = bob.dvc("repro")
    assert ran(again.stdout) == set() and "Data and pipelines are up to date." in again.stdout


def test_an_experiment_pushed_from_one_clone_is_pulled_applied_and_reproduced_in_another(team: Team, tmp_path: Path):
    alice = team.clone(tmp_path / "alice-again")  # alice's next day: a clean clone, the pipeline pulled
    alice.remote("pull")
    experiment = alice.dvc("exp", "run", "-n", "lr-big", "-S", "lr=0.01")
    assert {"train", "evaluate@train", "select"} <= ran(experiment.stdout)
    results = {out: tree(alice.path / out) for out in ("models/train", "metrics", "params.yaml")}
    alice.remote("exp", "push", "origin", "lr-big")
    assert "lr-big" in alice.run("git", "ls-remote", "origin").stdout

    bob = team.clone(tmp_path / "bob")
    assert "lr-big" in bob.dvc("exp", "list", "origin").stdout
    bob.remote("exp", "pull", "origin", "lr-big")
    shown = json.loads(bob.dvc("exp", "show", "--json").stdout)
    names = [exp.get("name") for baseline in shown for exp in (baseline.get("experiments") or [])]
    assert "lr-big" in names
    bob.dvc("exp", "apply", "lr-big")
    assert yaml.safe_load((bob.path / "params.yaml").read_text())["lr"] == 0.01
    for out, expected in results.items():
        assert tree(bob.path / out) == expected, out
    reproduced = bob.dvc("repro")
    assert ran(reproduced.stdout) == {"mirror"}, reproduced.stdout
    assert bob.status() == {}

    lock = (bob.path / "dvc.lock").read_bytes()                     # and retrained from scratch: the same bytes
    retrained = bob.dvc("repro", "--force", "--single-item", "train")
    assert ran(retrained.stdout) == {"train"}
    assert tree(bob.path / "models/train") == results["models/train"]
    assert (bob.path / "dvc.lock").read_bytes() == lock
    assert bob.status() == {}

    carol = team.clone(tmp_path / "carol")                          # no experiment refs, nothing pulled:
    rerun = carol.dvc("exp", "run", "--pull", "-S", "lr=0.01")      # the team's run-cache, as CI would use it
    assert "Stage 'train' is cached - skipping run, checking out outputs" in rerun.stdout, rerun.stdout
    assert not {"train", "evaluate@train", "select"} & ran(rerun.stdout), rerun.stdout
    assert tree(carol.path / "models/train") == results["models/train"]
    assert tree(carol.path / "metrics") == results["metrics"]


def test_an_unreachable_remote_fails_in_one_sentence_and_loses_nothing(team: Team, tmp_path: Path):
    storage, unmounted = tmp_path / "share" / "dvc-storage", tmp_path / "elsewhere"
    shutil.copytree(team.storage, storage)                          # this test's own copy, to break at will
    carol = team.clone(tmp_path / "carol")
    carol.dvc("remote", "modify", "--local", "storage", "url", str(storage))
    outputs = cached_outputs(carol.path)

    def unmount() -> None:
        storage.rename(unmounted)

    def mount() -> None:
        unmounted.rename(storage)

    def one_error_line(result: subprocess.CompletedProcess) -> str:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        return lines[0]

    unmount()
    for command in (["pull"], ["check"]):
        failed = carol.remote(*command, check=False)
        assert failed.returncode == 2
        line = one_error_line(failed)
        assert line.startswith(f"error: the DVC remote 'storage' ({storage}) cannot be reached: the folder"), line
        assert "is the share mounted?" in line and "run the same command again" in line
    plain = carol.dvc("pull", check=False)                          # DVC alone fails too, less clearly
    assert plain.returncode != 0
    assert not storage.exists()                                     # nothing created where the share belongs
    assert not any((carol.path / out).exists() for out in outputs) and leftovers(carol.path) == []
    assert carol.run("git", "status", "--porcelain").stdout == ""

    mount()
    carol.remote("pull")                                            # the retry, once it answers
    for out in outputs:
        assert tree(carol.path / out) == tree(team.alice.path / out), out

    unmount()                                                       # the pipeline never needs the remote
    assert ran(carol.dvc("repro").stdout) == {"mirror"}
    assert carol.status() == {}
    carol.dvc("exp", "save", "-n", "saved-offline")
    refused = carol.remote("exp", "push", "origin", "saved-offline", check=False)
    assert refused.returncode == 2 and "cannot be reached" in one_error_line(refused)
    assert "saved-offline" not in carol.run("git", "ls-remote", "origin").stdout  # no ref without its data
    mount()

    # A remote that breaks during a push. Carol makes new outputs (predictions of a changed
    # predict stage); the remote cannot take one of the new files (a folder holds its name).
    carol.set_params({"predict": {"max_pixels": 10_000}})
    assert {"predict"} <= ran(carol.dvc("repro").stdout)
    cache = carol.path / ".dvc" / "cache" / "files" / "md5"
    new = [name for name in workspace_objects(carol) if not (storage / "files" / "md5" / name[:2] / name[2:]).exists()]
    assert len(new) >= 2, new
    blocker = storage / "files" / "md5" / new[0][:2] / new[0][2:]
    blocker.mkdir(parents=True)
    held = {name: (cache / name[:2] / name[2:]).read_bytes() for name in workspace_objects(carol)}
    failed = carol.remote("push", check=False)
    assert failed.returncode not in (0, 2)
    assert failed.stderr.strip().splitlines()[-1].startswith(
        f"error: `dvc push --run-cache` with the DVC remote 'storage' ({storage}) failed"), failed.stderr
    assert_every_remote_object_is_whole(storage)                    # never a partial object
    assert {name: (cache / name[:2] / name[2:]).read_bytes() for name in workspace_objects(carol)} == held
    assert carol.status() == {}                                     # nothing local lost or changed
    assert leftovers(carol.path) == []

    blocker.rmdir()                                                 # the remote is back
    carol.remote("push")
    for name, data in held.items():                                 # every object carol's outputs need
        assert (storage / "files" / "md5" / name[:2] / name[2:]).read_bytes() == data, name
    carol.commit("predictions of large images only")
    carol.run("git", "push", "-q", "origin", "HEAD:carol")
    dave = team.clone(tmp_path / "dave")                            # a colleague gets carol's outputs
    dave.run("git", "checkout", "-q", "carol")
    dave.dvc("remote", "modify", "--local", "storage", "url", str(storage))
    dave.remote("pull")
    for out in outputs:
        assert tree(dave.path / out) == tree(carol.path / out), out


def test_two_nodes_train_with_torchrun_each_from_the_pulled_data_and_node_0_records_it(team: Team, tmp_path: Path):
    """The stage command unchanged (``-m stages.train``) under torchrun across two "nodes" (two
    clones on loopback): each pulls only what training reads, rank 0 writes the model, and
    node 0 records the run with ``dvc commit`` and pushes it for the team."""
    import socket

    inputs = ["data/processed/train_balanced.npz", "data/processed/split", "data/processed/classes.json"]
    nodes = [team.clone(tmp_path / f"node{rank}") for rank in (0, 1)]
    nodes[0].remote("pull")                                                  # node 0 records the run: all of it
    nodes[1].remote("pull", *inputs)                                         # node 1 only trains
    assert not (nodes[1].path / "models/train").exists()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launchers = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
                          "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
                          "-m", "stages.train"],
                         cwd=node.path, env=node.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank, node in enumerate(nodes)
    ]
    logs = [launcher.communicate(timeout=900)[0] for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], logs
    assert "train epoch 1/" in logs[0] and "train epoch 1/" not in logs[1]   # rank 0 alone reports ...
    assert not (nodes[1].path / "models/train").exists()                     # ... and writes
    sidecar = json.loads((nodes[0].path / "models/train/model.json").read_text())
    assert sidecar["info"]["world_size"] == 2

    node0 = nodes[0]
    node0.dvc("commit", "--force", "train")                                  # record the two-node run
    lock = yaml.safe_load((node0.path / "dvc.lock").read_text())
    [model] = [out for out in lock["stages"]["train"]["outs"] if out["path"] == "models/train"]
    assert model["md5"] != next(out["md5"] for out in yaml.safe_load((team.alice.path / "dvc.lock").read_text())
                                ["stages"]["train"]["outs"] if out["path"] == "models/train")
    assert "train" not in node0.status()                                    # recorded; downstream now due
    node0.remote("push")
