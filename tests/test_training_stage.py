"""What the training stages share (lifecycle/training/stage.py), in one process: rank 0 saves the
model with its provenance and moves the DVCLive log into place; another rank writes nothing; a
failure discards the log and leaves the committed folder as it was."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lifecycle.models import SIDECAR_FILE, WEIGHTS_FILE, ModelSpec, build_model
from lifecycle.training.loop import EpochRecord, FitConfig, FitResult, Samples
from lifecycle.training.stage import fit_stage

SPEC = ModelSpec("seed_cnn", ["cat", "dog"], 16, arguments={"channels": [4]})
CONFIG = FitConfig(epochs=2, batch_size=8, lr=0.01, seed=0)


@pytest.fixture
def samples() -> Samples:
    images = np.random.default_rng(0).integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    return Samples.from_images(images, np.arange(24) % 2)


@pytest.fixture
def committed(tmp_path: Path) -> Path:
    """A log folder as git has it from an earlier run."""
    live = tmp_path / "live"
    (live / "plots").mkdir(parents=True)
    (live / "metrics.json").write_text("the committed summary\n")
    return live


def everything(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_rank_0_saves_the_model_with_its_provenance_and_puts_the_log_in_place(samples, committed, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("RANK", "0")
    with fit_stage("train", log_dir=committed) as stage:
        model = stage.seeded(lambda: build_model(SPEC), 0)
        result = stage.fit_and_save(model, samples, samples, CONFIG, SPEC, tmp_path / "model", info={"params": {"lr": 0.01}})
    sidecar = json.loads((tmp_path / "model" / SIDECAR_FILE).read_text())
    assert (tmp_path / "model" / WEIGHTS_FILE).is_file()
    info = sidecar["info"]
    assert info["stage"] == "train" and info["world_size"] == 1 and info["params"] == {"lr": 0.01}
    assert info["best_epoch"] == result.best_epoch == stage.summary["best_epoch"]
    assert info["val"] == pytest.approx(stage.summary["val"], abs=1e-6)   # as written: 6 decimals
    log = json.loads((committed / "metrics.json").read_text())   # the new run's summary replaced the committed one
    assert log["step"] == result.best_epoch and log["val"] == pytest.approx(stage.summary["val"], abs=1e-6)
    assert (committed / "plots" / "metrics" / "val" / "accuracy.tsv").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmpdir")]


def test_another_rank_neither_saves_nor_logs(samples, committed, tmp_path, monkeypatch):
    """Rank 1 of a group, in one process: the loop is replaced by one that returns what a rank gets
    back from a fit (a process group of one cannot have a rank 1); the stage must not save or log."""
    monkeypatch.setenv("RANK", "1")   # WORLD_SIZE unset: no process group is started
    fitted = FitResult(best_epoch=2, history=[EpochRecord(1, 0.7, 0.5, 0.6, 0.5), EpochRecord(2, 0.5, 0.8, 0.4, 0.9)],
                       world_size=2)
    monkeypatch.setattr("lifecycle.training.stage.fit", lambda *args, **kwargs: fitted)
    before = everything(tmp_path)
    with fit_stage("train", log_dir=committed) as stage:
        assert stage.log is None and not stage.cluster.is_main
        model = stage.seeded(lambda: build_model(SPEC), 0)
        result = stage.fit_and_save(model, samples, samples, CONFIG, SPEC, tmp_path / "model", info={})
    assert result is fitted and stage.summary["best_epoch"] == 2
    assert everything(tmp_path) == before                        # no model, no staging folder, no log
    assert (committed / "metrics.json").read_text() == "the committed summary\n"


@pytest.mark.parametrize("failure", [RuntimeError("the data ran out"), KeyboardInterrupt()])
def test_a_failed_run_discards_its_log_and_leaves_the_committed_one(failure, samples, committed, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("RANK", "0")
    before = everything(tmp_path)
    with pytest.raises(type(failure)):
        with fit_stage("train", log_dir=committed) as stage:
            model = stage.seeded(lambda: build_model(SPEC), 0)
            stage.fit_and_save(model, samples, samples, CONFIG, SPEC, None, info={})   # logged two epochs
            assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmpdir")]    # staged beside the log
            raise failure
    assert everything(tmp_path) == before                       # no staging folder, no model, no new curves
    assert (committed / "metrics.json").read_text() == "the committed summary\n"
