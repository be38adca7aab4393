"""A refused experiment leaves the workspace as it was: the check_params stage runs before every
other stage and refuses a bad params.yaml before DVC removes any stage's outputs.

DVC removes a stage's outputs before it runs the stage's command, so the stage that reads a bad
key cannot be the one to refuse it without losing its model and committed files first. Fast
tests read the graph (every stage waits for the check) and the check's output (persistent,
committed, the same bytes for any valid params); the slow one runs the tiny pipeline and then
`dvc exp run` with a bad training key and a bad tune key.
"""
from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from lifecycle.core import paths
from lifecycle.core.errors import UserError
from stages import check_params as stage
from tests.conftest import ROOT, RepoCopy, git_status
from tests.dvc_graph import stages

CHECK = "check_params"
OUTPUT = "params.check.json"
COMMITTED = yaml.safe_load((ROOT / "params.yaml").read_text())


def upstream_stages() -> dict[str, set[str]]:
    """For each stage, the stages whose outputs it depends on (a dep equal to, inside or around an out)."""
    every = stages()
    producers = {out: each.name for each in every for out in each.outs}

    def produces(out: str, dep: str) -> bool:
        return Path(dep) == Path(out) or Path(out) in Path(dep).parents or Path(dep) in Path(out).parents

    return {each.name: {producers[out] for dep in each.deps for out in producers
                        if produces(out, dep) and producers[out] != each.name} for each in every}


def ancestors(graph: dict[str, set[str]], name: str) -> set[str]:
    found, todo = set(), [name]
    while todo:
        for parent in graph[todo.pop()]:
            if parent not in found:
                found.add(parent)
                todo.append(parent)
    return found


def test_every_stage_waits_for_the_check_which_waits_for_nothing():
    graph = upstream_stages()
    assert graph[CHECK] == set()
    late = sorted(name for name in graph if name != CHECK and CHECK not in ancestors(graph, name))
    assert late == [], f"these stages can run (and lose their outputs) before params are checked: {late}"


def test_the_check_reads_every_param_and_its_output_is_persistent_and_committed():
    definition = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][CHECK]
    assert definition["params"] == [{"params.yaml": None}]  # the whole file, unknown keys included
    assert definition["outs"] == [{OUTPUT: {"cache": False, "persist": True}}]  # never removed by DVC; in git
    tracked = subprocess.run(["git", "ls-files", OUTPUT], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked.strip() == OUTPUT
    assert paths.PARAMS_CHECK == ROOT / OUTPUT


def with_changes(**changes) -> dict:
    """The committed params with dotted keys (``tune__grid__lr``) set."""
    document = copy.deepcopy(COMMITTED)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = document
        for part in parents:
            target = target[part]
        target[last] = value
    return document


def run_check(tmp_path: Path, monkeypatch, document: dict) -> bytes:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    monkeypatch.setattr(paths, "PARAMS", tmp_path / "params.yaml")
    monkeypatch.setattr(paths, "PARAMS_CHECK", tmp_path / OUTPUT)
    stage.main()
    return (tmp_path / OUTPUT).read_bytes()


def test_the_output_is_the_same_bytes_for_any_valid_params(tmp_path, monkeypatch):
    committed = run_check(tmp_path, monkeypatch, COMMITTED)
    changed = run_check(tmp_path, monkeypatch, with_changes(lr=0.01, epochs=3, tune__grid__lr=[0.1], seed=7))
    assert committed == changed == (ROOT / OUTPUT).read_bytes()


@pytest.mark.parametrize(
    "changes, sentence",
    [
        ({"lr": -1}, "params.yaml: 'lr' must be greater than 0.0, got int -1."),
        # the checks that need skorch or torchvision, not only the schema
        ({"tune__grid__lr": [-1]}, "params.yaml: 'tune.grid.lr' values must be positive numbers, got -1."),
        ({"tune__grid__momentum": [0.9]}, "params.yaml: 'tune.grid.momentum' is not a parameter the tuned net accepts"),
        ({"finetune__architecture": "resnet999"}, "params.yaml: 'finetune.architecture' is 'resnet999', which is not"),
    ],
)
def test_a_bad_value_is_refused_with_one_sentence_and_the_output_is_left_alone(tmp_path, monkeypatch, changes, sentence):
    before = run_check(tmp_path, monkeypatch, COMMITTED)
    with pytest.raises(UserError) as error:
        run_check(tmp_path, monkeypatch, with_changes(**changes))
    assert sentence in str(error.value)
    assert (tmp_path / OUTPUT).read_bytes() == before


# ---------------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_a_refused_experiment_leaves_the_workspace_as_it_was(repo_copy, default_mlflow_store, tmp_path):
    repo = repo_copy()
    repo.dvc("repro")
    repo.commit("a full run")
    assert git_status(repo) == ""
    kept = ["models/train/model.pt", "metrics/train/metrics.json", "metrics/tune.json", "plots/tune/results.csv"]
    before = {name: (repo.path / name).read_bytes() for name in kept}

    lr = "error: params.yaml: 'lr' must be greater than 0.0, got int -1."
    grid = "error: params.yaml: 'tune.grid.lr' values must be positive numbers, got -1."
    for command, sentence in (
        (["exp", "run", "-S", "lr=-1"], lr),                     # every stage: dvc.yaml's order alone would do
        (["exp", "run", "-S", "tune.grid.lr=[-1]"], grid),
        (["exp", "run", "-S", "lr=-1", "train"], lr),            # one target: only the graph's edge brings the check
        (["repro", "tune"], grid),                                # params.yaml edited by hand
    ):
        if command[0] == "repro":
            repo.set_params({"tune": {"grid": {"lr": [-1]}}})
        result = repo.dvc(*command, check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and sentence in output, output
        assert "Running stage 'check_params'" in output and "Running stage 'ingest'" not in output, output
        assert git_status(repo) == " M params.yaml\n", command     # nothing else changed or went missing
        assert {name: (repo.path / name).read_bytes() for name in kept} == before, command
        repo.run("git", "checkout", "params.yaml")
        assert "Data and pipelines are up to date." in repo.dvc("status").stdout, command

    result = repo.dvc("exp", "run", "--temp", "-S", "lr=-1", check=False)  # in a temporary copy: the same sentence
    assert result.returncode != 0 and lr in result.stdout + result.stderr, result.stdout + result.stderr
    assert git_status(repo) == ""

    clone = tmp_path / "clone"                                   # the check's output is committed:
    repo.run("git", "clone", "-q", str(repo.path), str(clone))   # a fresh clone need not run it
    assert "up to date" in RepoCopy(clone).dvc("status", CHECK).stdout
