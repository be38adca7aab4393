"""dvc.yaml tells the truth about the code: every stage's deps cover every project module its
command runs (its import closure, lazy imports included), list nothing it never imports,
and no stage runs another stage's script. Editing a module then reruns exactly the stages
that use it: no more (the server, the mirror, the PR report retrain nothing), no less."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from lifecycle.evaluation import CANDIDATES
from tests import dvc_graph
from tests.dvc_graph import ROOT, closure, entry_points, gaps, inert, stages


def stage(name: str) -> dvc_graph.Stage:
    return next(s for s in stages() if s.name == name)


@pytest.mark.parametrize("name", [s.name for s in stages()])
def test_deps_cover_exactly_the_code_the_stage_runs(name):
    assert gaps(stage(name)) == []


def test_a_missing_dep_line_is_caught_and_named(tmp_path):
    """Delete one needed line from a copy of dvc.yaml: the gap names the stage and the file."""
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("lifecycle", "stages", "tracking"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    text = (tmp_path / "dvc.yaml").read_text()
    train = text.index("\n  train:\n")
    line = "      - lifecycle/models.py\n"
    cut = text.index(line, train)
    (tmp_path / "dvc.yaml").write_text(text[:cut] + text[cut + len(line):])
    [problem] = gaps(next(s for s in stages(tmp_path) if s.name == "train"), tmp_path)
    assert problem.startswith("train: runs lifecycle/models.py <- ")
    assert problem.endswith("but its deps in dvc.yaml do not list lifecycle/models.py")


def test_lazy_imports_inside_functions_count(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/__init__.py").write_text('"""docstring only"""\n')
    (tmp_path / "pkg/late.py").write_text("X = 1\n")
    (tmp_path / "pkg/main.py").write_text("def f():\n    from pkg.late import X\n    return X\n")
    reached = closure(entry_points("python -m pkg.main", tmp_path), tmp_path)
    assert tmp_path / "pkg/late.py" in reached
    assert inert(tmp_path / "pkg/__init__.py")


def test_the_server_the_mirror_and_the_review_tooling_retrain_nothing():
    for each in stages():
        code = {p.relative_to(ROOT).parts[0] for p in closure(entry_points(each.cmd))}
        assert "serving" not in code, each.name
        assert "scripts" not in code, each.name
        if each.name != "mirror":
            assert "tracking" not in code, each.name
            assert not any(dep.startswith(("tracking", "serving", "scripts")) for dep in each.deps), each.name


def test_evaluate_runs_for_exactly_the_candidates_select_reads():
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert pipeline["stages"]["evaluate"]["foreach"] == list(CANDIDATES)
    select = stage("select")
    assert sorted(d for d in select.deps if d.startswith("metrics/evaluate/")) == sorted(
        f"metrics/evaluate/{c}.json" for c in CANDIDATES)
    assert sorted(d for d in select.deps if d.startswith("models/")) == sorted(f"models/{c}" for c in CANDIDATES)
    rows = sorted(d for d in select.deps if d.startswith("plots/evaluate/"))  # per-image correctness: the paired test
    assert rows == sorted(f"plots/evaluate/{c}/confusion_val.csv" for c in CANDIDATES)
    for candidate in CANDIDATES:
        assert f"metrics/evaluate/{candidate}.json" in stage(f"evaluate@{candidate}").outs
        assert f"plots/evaluate/{candidate}/confusion_val.csv" in stage(f"evaluate@{candidate}").outs


def test_every_stage_declares_what_it_writes_and_no_two_stages_write_the_same_path():
    owners: dict[str, str] = {}
    for each in stages():
        assert each.outs, f"{each.name} declares no output, so DVC would skip it on a fresh clone"
        for out in each.outs:
            for other, owner in owners.items():
                overlap = out == other or Path(other) in Path(out).parents or Path(out) in Path(other).parents
                assert not overlap, f"{each.name} and {owner} both declare {out} / {other}"
            owners[out] = each.name


def test_inference_code_runs_no_training_code():
    """Editing the training loop reruns the stages that train, never those that only run a model forward."""
    library = closure([ROOT / "lifecycle/models.py", ROOT / "lifecycle/backbones.py"])
    assert [p for p in library if ROOT / "lifecycle/training" in p.parents] == []
    for name in ("frozen_features", "evaluate@train", "predict"):
        assert ROOT / "lifecycle/training/loop.py" not in closure(entry_points(stage(name).cmd)), name
