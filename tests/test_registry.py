"""The promotion gate (tracking/gate.py, registry.py, promote.py, rollback.py), proven with real parts.

Models are registered by the real mirror (pt2 export, registry version, alias ``candidate``)
and scored through the real forward path. They are made to order, so every score is known
before the gate computes it: on a split of 30 dark "cats" and 10 bright "dogs", a model that
answers "cat" scores accuracy 0.75, one that answers "dog" 0.25 (the collapse ``lr=0.01``
causes in the seed CNN), and a brightness detector 1.0. The fast tests use the default
sqlite store in-process; the slow one runs the commands against a real ``mlflow server``
after a real ``dvc repro``, and checks what DVC then says.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lifecycle.core.errors import UserError
from lifecycle.core.schema import PromoteParams
from lifecycle.models import ModelSpec, SeedCNN, build_model, save_model
from lifecycle.training.loop import FitConfig, Samples, fit
from lifecycle.training.runtime import seed_everything
from tracking import gate, mirror, registry, snapshot
from tracking.promote import promote
from tracking.rollback import rollback
from tracking.store import CANDIDATE, REGISTERED_MODEL

from .conftest import ROOT, env_with_venv
from .servers import free_port
from .test_tracking import (  # noqa: F401 (empty_store and mlflow_server are fixtures)
    add_model_stub,
    client_for,
    empty_store,
    mlflow_server,
    write_model_state,
)

SIDE = 8
CATS, DOGS = 30, 10
PARAMS = PromoteParams(metric="accuracy", margin=0.005, alpha=0.05)


# ----------------------------------------------------------------------------- models made to order


def brightness_split(side: int = SIDE) -> gate.ValidationSplit:
    """30 dark images labelled cat, 10 bright ones labelled dog."""
    rng = np.random.default_rng(0)
    labels = np.array([0] * CATS + [1] * DOGS)
    level = np.where(labels == 1, 200, 50)[:, None, None, None]
    images = np.clip(level + rng.integers(-20, 21, size=(len(labels), side, side, 3)), 0, 255).astype(np.uint8)
    return gate.ValidationSplit(images, labels, ["cat", "dog"], "0" * 64)


def one_class_model(answer: int, side: int = SIDE) -> SeedCNN:
    """Answers class ``answer`` for every image: the output layer ignores its input."""
    torch.manual_seed(answer)
    model = SeedCNN(side, 2, (1,))
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([1.0, 0.0] if answer == 0 else [0.0, 1.0]))
    return model


def brightness_model(side: int = SIDE) -> SeedCNN:
    """Answers dog for bright images: the mean of the rectified pixel average, against 0.7."""
    model = SeedCNN(side, 2, (1,))
    with torch.no_grad():
        model.conv[0].weight.fill_(1 / 27)
        model.conv[0].bias.zero_()
        model.fc.weight.zero_()
        model.fc.weight[1].fill_(1 / model.fc.in_features)
        model.fc.bias.copy_(torch.tensor([0.7, 0.0]))
    return model


def spec(side: int = SIDE) -> ModelSpec:
    return ModelSpec("seed_cnn", ["cat", "dog"], side, arguments={"channels": [1]})


def mirror_model(root: Path, model: torch.nn.Module, name: str, model_spec: ModelSpec | None = None) -> int:
    """Mirror a pipeline state whose selected model is ``model``; returns its registry version."""
    save_model(model, model_spec or spec(), root / "models/best")
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics/select.json").write_text(json.dumps({"model": name}))
    report = mirror.mirror_workspace(root, environ={})
    assert report.kept == [], report.warning()
    client = client_for(f"sqlite:///{root}/mlflow.db")
    return int(client.get_model_version_by_alias(REGISTERED_MODEL, CANDIDATE).version)


@pytest.fixture
def store(tmp_path: Path, empty_store: Path) -> Path:  # noqa: F811 (the fixture imported above)
    """A folder holding params.yaml and an empty default store (mlflow.db), no git needed."""
    root = tmp_path / "workspace"
    root.mkdir()
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (root / "mlflow.db").write_bytes(empty_store.read_bytes())
    return root


# ----------------------------------------------------------------------------- the decision


def right_on(*runs: tuple[bool, int]) -> np.ndarray:
    """Per-image correctness from (right?, images) runs: right_on((True, 30), (False, 10))."""
    return np.concatenate([np.full(count, value) for value, count in runs])


# 1000 images; both models right on 800 and wrong on 170; the 30 discordant ones split:
SIGNIFICANT = right_on((True, 800), (True, 25), (False, 5), (False, 170)), right_on((True, 800), (False, 25), (True, 5), (False, 170))
NOISE = right_on((True, 800), (True, 18), (False, 12), (False, 170)), right_on((True, 800), (False, 18), (True, 12), (False, 170))


def test_the_decision_needs_the_paired_test_and_the_margin_and_no_champion_means_the_first_one():
    split = brightness_split()
    candidate, champion = SIGNIFICANT                         # 25 to 5: p = 0.00016
    assert gate.decide("accuracy", 0.005, 0.05, (2, 0.88, candidate), None, split).decision == gate.FIRST_CHAMPION
    exactly = gate.decide("accuracy", 0.005, 0.05, (2, 0.88, candidate), (1, 0.875, champion), split)  # 0.88 - 0.875 > 0.005 in floats
    assert exactly.decision == gate.PROMOTED and exactly.champion_after == 2
    assert exactly.paired.discordant == 30 and exactly.paired.p_value < 0.001
    short = gate.decide("accuracy", 0.005, 0.05, (2, 0.879, candidate), (1, 0.875, champion), split)
    assert short.decision == gate.REFUSED and short.champion_after == 1 and not short.moves_alias
    # beyond the margin (+0.006: the old rule promoted this), but 18 to 12 is noise: p = 0.18
    candidate, champion = NOISE
    noise = gate.decide("accuracy", 0.005, 0.05, (2, 0.818, candidate), (1, 0.812, champion), split)
    assert noise.decision == gate.REFUSED and noise.margin_met and not noise.significant
    assert noise.paired.difference_low < 0 < noise.paired.difference_high
    assert gate.decide("accuracy", 0.005, 0.2, (2, 0.818, candidate), (1, 0.812, champion), split).decision == gate.PROMOTED
    worse = gate.decide("accuracy", 0.0, 0.05, (2, 0.5, champion), (1, 0.875, candidate), split)
    assert worse.decision == gate.REFUSED
    assert worse.sentence() == (
        "refused: candidate v2 (accuracy 0.5000) vs champion v1 (accuracy 0.8750) on 40 validation images: -0.3750, "
        "less than the margin 0; right on 12 images the champion misses, wrong on 18 it gets right (McNemar exact "
        "p=0.9 >= alpha 0.05: within noise; accuracy difference -0.0060, 95% [-0.0164, +0.0056]); champion is v1")


def test_scores_go_through_the_forward_path_and_mismatched_models_are_named():
    split = brightness_split()
    assert gate.score(one_class_model(0), spec(), split, "m")["accuracy"] == CATS / (CATS + DOGS)
    assert gate.score(one_class_model(1), spec(), split, "m")["accuracy"] == DOGS / (CATS + DOGS)
    assert gate.score(brightness_model(), spec(), split, "m")["accuracy"] == 1.0
    with pytest.raises(UserError, match=r"^champion v3 takes 16-pixel images but data/processed/split/val.npz "
                                        r"holds 8-pixel ones"):
        gate.score(one_class_model(0, 16), spec(16), split, "champion v3")
    renamed = gate.ValidationSplit(split.images, split.labels, ["dog", "cat"], split.sha256)
    with pytest.raises(UserError, match=r"^candidate v2 answers classes \['cat', 'dog'\] but the current data has "):
        gate.score(one_class_model(0), spec(), renamed, "candidate v2")


def test_a_missing_split_is_one_sentence_naming_the_file(tmp_path: Path):
    with pytest.raises(UserError) as error:
        gate.read_validation_split(tmp_path / "val.npz", tmp_path / "classes.json")
    assert str(error.value).endswith("does not exist; the gate scores both models on the current validation "
                                     "split, so run dvc repro split (or dvc pull) first.")


def test_the_record_keeps_the_last_decision_and_a_line_per_decision(tmp_path: Path):
    split = brightness_split()
    record, log = tmp_path / "promotion.json", tmp_path / "promotion_log.tsv"
    candidate, champion = NOISE
    first = gate.decide("accuracy", 0.005, 0.05, (1, 0.75, champion), None, split, at="2026-01-01T00:00:00Z")
    second = gate.decide("accuracy", 0.005, 0.05, (2, 0.25, candidate), (1, 0.75, champion), split, at="2026-01-02T00:00:00Z")
    # a log from before the paired test: its lines stay, under the new header, with empty new cells
    old_columns = gate.LOG_COLUMNS[:gate.LOG_COLUMNS.index("split_images") + 1]
    log.write_text("\t".join(old_columns) + "\n" + "\t".join(["2025-12-31T00:00:00Z", "promote", "first_champion"]
                                                             + [""] * (len(old_columns) - 3)) + "\n")
    gate.write_record(first, record, log)
    gate.write_record(second, record, log)
    saved = json.loads(record.read_text())
    assert saved["decision"] == "refused" and saved["champion_after"] == 1
    assert saved["candidate"] == {"version": 2, "accuracy": 0.25} and saved["champion"] == {"version": 1, "accuracy": 0.75}
    assert saved["alpha"] == 0.05
    assert saved["paired"] == {"test": "mcnemar_exact", "p_value": pytest.approx(0.180797, abs=1e-6), "discordant": 30,
                               "difference": 0.006, "difference_low": pytest.approx(-0.005638, abs=1e-6),
                               "difference_high": pytest.approx(0.016407, abs=1e-6)}
    lines = [line.split("\t") for line in log.read_text().splitlines()]
    assert lines[0] == list(gate.LOG_COLUMNS) and len(lines) == 4 and all(len(row) == len(lines[0]) for row in lines)
    assert [row[2] for row in lines[1:]] == ["first_champion", "first_champion", "refused"]
    row = dict(zip(gate.LOG_COLUMNS, lines[3]))
    assert (row["candidate_score"], row["alpha"], row["test"], row["discordant"]) == ("0.250000", "0.05", "mcnemar_exact", "30")
    assert float(row["p_value"]) == pytest.approx(0.180797, abs=1e-6) and dict(zip(gate.LOG_COLUMNS, lines[2]))["p_value"] == ""


def test_promotion_records_are_not_part_of_a_pipeline_state(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/select.json").write_text("{}")
    before = snapshot.pipeline_state(tmp_path)
    (tmp_path / "metrics/promotion.json").write_text('{"decision": "promoted"}')
    (tmp_path / "metrics/promotion_log.tsv").write_text("at\n")
    assert snapshot.pipeline_state(tmp_path) == before
    assert snapshot.mirrored_files(tmp_path) == ["metrics/select.json", "params.yaml"]
    ignored = (ROOT / ".dvcignore").read_text().split()
    assert all(f"/{name}" in ignored for name in ("metrics/promotion.json", "metrics/promotion_log.tsv"))
    assert yaml.safe_load((ROOT / "dvc.yaml").read_text())["metrics"] == ["metrics/promotion.json"]


# ----------------------------------------------------------------------------- the registry, in-process


@pytest.mark.slow
def test_promote_refuse_and_roll_back_in_the_default_store(store: Path):
    split = brightness_split()
    uri = f"sqlite:///{store}/mlflow.db"
    client = client_for(uri)

    cat_only = mirror_model(store, one_class_model(0), "cat-only")
    first = promote(registry.Registry.open(uri), PARAMS, split)
    assert first.decision == gate.FIRST_CHAMPION and first.candidate_score == 0.75
    assert promote(registry.Registry.open(uri), PARAMS, split) is None            # the candidate already is the champion

    detector = mirror_model(store, brightness_model(), "detector")
    dry = promote(registry.Registry.open(uri), PARAMS, split, dry_run=True)
    assert dry.decision == gate.PROMOTED
    assert registry.Registry.open(uri).version_of(registry.CHAMPION) == cat_only  # a dry run moves nothing
    better = promote(registry.Registry.open(uri), PARAMS, split)
    assert (better.decision, better.candidate_score, better.champion_score) == (gate.PROMOTED, 1.0, 0.75)
    assert registry.Registry.open(uri).version_of(registry.CHAMPION) == detector

    collapsed = mirror_model(store, one_class_model(1), "dog-only")          # what lr=0.01 does to the seed CNN
    worse = promote(registry.Registry.open(uri), PARAMS, split)
    assert (worse.decision, worse.candidate_score, worse.champion_score) == (gate.REFUSED, 0.25, 1.0)
    assert registry.Registry.open(uri).version_of(registry.CHAMPION) == detector
    assert registry.Registry.open(uri).version_of(CANDIDATE) == collapsed             # candidate still means the latest run
    for version in (collapsed, detector):                                    # the decision on both versions
        tags = client.get_model_version(REGISTERED_MODEL, str(version)).tags
        assert tags["promotion.decision"] == "refused"
        assert (tags["promotion.candidate_score"], tags["promotion.champion_score"]) == ("0.250000", "1.000000")
        # the paired test: the dog-only model is right on the 10 dogs the detector also gets, wrong on 30 cats
        assert (tags["promotion.test"], tags["promotion.discordant"], tags["promotion.alpha"]) == ("mcnemar_exact", "30", "0.05")
        assert float(tags["promotion.p_value"]) == 1.0 and float(tags["promotion.difference_high"]) < 0
        assert (tags["promotion.candidate_version"], tags["promotion.champion_after"]) == (str(collapsed), str(detector))
    assert registry.Registry.open(uri).history() == [cat_only, detector]

    back = rollback(registry.Registry.open(uri), PARAMS, split)
    assert (back.decision, back.champion_version, back.champion_after) == (gate.ROLLED_BACK, detector, cat_only)
    assert (back.champion_score, back.candidate_score) == (1.0, 0.75)
    assert registry.Registry.open(uri).version_of(registry.CHAMPION) == cat_only
    assert registry.Registry.open(uri).history() == [cat_only]
    assert client.get_model_version(REGISTERED_MODEL, str(detector)).tags["rollback.champion_after"] == str(cat_only)
    with pytest.raises(UserError, match=rf"^champion v{cat_only} has no earlier champion to roll back to"):
        rollback(registry.Registry.open(uri), PARAMS, None)


@pytest.mark.slow
def test_an_alias_set_by_hand_stays_reachable_by_a_rollback(store: Path):
    split = brightness_split()
    uri = f"sqlite:///{store}/mlflow.db"
    by_hand = mirror_model(store, one_class_model(0), "cat-only")
    client_for(uri).set_registered_model_alias(REGISTERED_MODEL, registry.CHAMPION, str(by_hand))
    detector = mirror_model(store, brightness_model(), "detector")
    assert promote(registry.Registry.open(uri), PARAMS, split).decision == gate.PROMOTED
    assert registry.Registry.open(uri).history() == [by_hand, detector]
    assert rollback(registry.Registry.open(uri), PARAMS, None).champion_after == by_hand


def test_a_registry_without_the_model_or_the_candidate_is_one_sentence(store: Path, tmp_path: Path):
    with pytest.raises(UserError) as missing:
        registry.Registry.open(f"sqlite:///{tmp_path}/nowhere/mlflow.db")
    assert str(missing.value).startswith(f"there is no MLflow registry at sqlite:///{tmp_path}/nowhere/mlflow.db (")
    uri = f"sqlite:///{store}/mlflow.db"
    with pytest.raises(UserError, match=f"has no model '{REGISTERED_MODEL}'; run the pipeline"):
        registry.Registry.open(uri)
    client_for(uri).create_registered_model(REGISTERED_MODEL)
    with pytest.raises(UserError, match=f"has no version with the alias '{CANDIDATE}'; run the pipeline"):
        promote(registry.Registry.open(uri), PARAMS, brightness_split())
    with pytest.raises(UserError, match="has no 'champion' to roll back; promote one first"):
        rollback(registry.Registry.open(uri), PARAMS, None)


def run_command(repo_root: Path, module: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module], cwd=repo_root, env={**env_with_venv(), **environ}, check=False,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_command_says_in_one_line_that_the_server_does_not_answer():
    uri = f"http://127.0.0.1:{free_port()}"                                   # nobody listens there
    result = run_command(ROOT, "tracking.promote", {"MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"error: the MLflow tracking server at {uri} does not answer (connection refused); "
                             "start it, or point MLFLOW_TRACKING_URI at one that runs.\n")


# ----------------------------------------------------------------------------- trained models, in-process

TRAINED = ModelSpec("seed_cnn", ["cat", "dog"], 16, arguments={"channels": [8]})


def faint_squares(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 16-pixel images, a faint bright square on the dogs, 5% of labels flipped: a model learns it
    to about 96% in 15 epochs (the flipped labels are what it cannot get), to about 83% in one."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    images = rng.integers(0, 120, size=(count, 16, 16, 3)).astype(np.int16)
    images[labels == 1, 4:12, 4:12, :] += 21
    flipped = rng.random(count) < 0.05
    return images.astype(np.uint8), np.where(flipped, 1 - labels, labels)


def trained_model(seed: int, epochs: int, train: Samples, val: Samples) -> torch.nn.Module:
    """The seed CNN through the project's one training loop; the seed sets its init and batch order."""
    seed_everything(seed)
    model = build_model(TRAINED)
    fit(model, train, val, FitConfig(epochs=epochs, batch_size=32, lr=0.003, seed=seed))
    return model


@pytest.mark.slow
def test_trained_models_a_better_one_is_promoted_and_another_seed_is_refused(store: Path):
    train_images, train_labels = faint_squares(512, seed=1)
    val_images, val_labels = faint_squares(300, seed=2)
    train, val = Samples.from_images(train_images, train_labels), Samples.from_images(val_images, val_labels)
    split = gate.ValidationSplit(val_images, val_labels, ["cat", "dog"], "0" * 64)
    uri = f"sqlite:///{store}/mlflow.db"
    params = PromoteParams(metric="accuracy", margin=0.0, alpha=0.05)  # no margin: the paired test alone decides

    one_epoch = mirror_model(store, trained_model(1, 1, train, val), "one epoch", TRAINED)
    assert promote(registry.Registry.open(uri), params, split).decision == gate.FIRST_CHAMPION
    full = mirror_model(store, trained_model(1, 15, train, val), "fifteen epochs", TRAINED)
    better = promote(registry.Registry.open(uri), params, split)
    assert better.decision == gate.PROMOTED, better.sentence()
    assert better.candidate_score - better.champion_score > 0.05 and better.paired.p_value < 1e-6
    assert 0 < better.paired.difference_low < better.paired.difference < better.paired.difference_high
    assert registry.Registry.open(uri).version_of(registry.CHAMPION) == full != one_epoch

    mirror_model(store, trained_model(2, 15, train, val), "fifteen epochs, another seed", TRAINED)
    reseeded = promote(registry.Registry.open(uri), params, split)
    print(better.sentence(), reseeded.sentence(), sep="\n")
    assert reseeded.decision == gate.REFUSED, reseeded.sentence()
    assert reseeded.paired.p_value >= 0.05 and reseeded.paired.difference_low <= 0 <= reseeded.paired.difference_high
    assert abs(reseeded.candidate_score - reseeded.champion_score) < 0.02
    assert registry.Registry.open(uri).version_of(registry.CHAMPION) == full


# ----------------------------------------------------------------------------- real server, real pipeline

STUB = '''"""Test stub of the model stages: models/best answers one class, chosen by lr (at 0.005 and above
"dog", the collapse; below, "cat"), plus the metrics and figure the real stages would write."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lifecycle.core.params import read_params_file
from tests.test_registry import write_one_class_state

params = read_params_file()
write_one_class_state(Path("."), answer=int(params["lr"] >= 0.005), lr=params["lr"], side=params["featurize"]["image_size"])
'''


def write_one_class_state(root: Path, answer: int, lr: float, side: int) -> None:
    """What the stub stage writes: the test_tracking stub's state, with a model that answers ``answer``."""
    write_model_state(root, lr=lr, image_size=side)
    save_model(one_class_model(answer, side), spec(side), root / "models/best")


@pytest.mark.slow
def test_promote_refuse_and_roll_back_against_a_real_server_after_dvc_repro(
    repo_copy, mlflow_server, monkeypatch  # noqa: F811 (the fixture imported above)
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)  # for dvc repro's mirror and for the commands
    # alpha 0.5: the tiny split has about 23 validation images, and the cat-only model beats the
    # dog-only one on about 16 of them to 7 (p near 0.05); this test is about the commands and the
    # registry, the paired test itself is proven above
    repo = repo_copy({"lr": 0.01, "promote": {"alpha": 0.5}})
    add_model_stub(repo, STUB)

    def repro(lr: float) -> None:
        repo.set_params({"lr": lr})
        result = repo.dvc("repro")
        assert "warning" not in result.stderr, result.stderr

    def command(module: str) -> subprocess.CompletedProcess[str]:
        return run_command(repo.path, module, {})

    def aliases() -> dict[str, str]:
        return dict(client_for(mlflow_server.uri).get_registered_model(REGISTERED_MODEL).aliases)

    repro(0.01)                                                         # answers dog: v1
    labels = np.load(repo.path / "data/processed/split/val.npz")["labels"]
    dog_score = float(np.mean(labels == 1))
    dog, cat = f"{dog_score:.4f}", f"{1 - dog_score:.4f}"
    first = command("tracking.promote")
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"promote: promoted: v1 (accuracy {dog}) is the first champion\n"
    assert repo.dvc("status").stdout.strip() == "Data and pipelines are up to date."  # a promotion never re-mirrors
    repo.commit("champion v1")

    repro(0.001)                                                        # answers cat: v2, better
    second = command("tracking.promote")
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith(f"promote: promoted: candidate v2 (accuracy {cat}) vs champion v1 (accuracy {dog})")
    diff = json.loads(repo.dvc("metrics", "diff", "--json").stdout)["metrics/promotion.json"]
    assert diff["candidate.version"]["old"] == 1 and diff["candidate.version"]["new"] == 2
    assert diff["champion_after"]["new"] == 2
    assert aliases() == {"candidate": "2", "champion": "2"}
    repo.commit("champion v2")

    repro(0.02)                                                         # answers dog again: v3, worse
    refused = command("tracking.promote")
    assert refused.returncode == 1, refused.stderr
    assert refused.stdout.startswith(f"promote: refused: candidate v3 (accuracy {dog}) vs champion v2 (accuracy {cat})")
    assert aliases() == {"candidate": "3", "champion": "2"}
    tags = client_for(mlflow_server.uri).get_model_version(REGISTERED_MODEL, "3").tags
    assert (tags["promotion.decision"], tags["promotion.candidate_score"]) == ("refused", f"{dog_score:.6f}")

    back = command("tracking.rollback")
    assert back.returncode == 0, back.stderr
    assert back.stdout == f"rollback: rolled back: champion v2 (accuracy {cat}) -> v1 (accuracy {dog})\n"
    assert aliases() == {"candidate": "3", "champion": "1"}
    log = (repo.path / "metrics/promotion_log.tsv").read_text().splitlines()
    assert [line.split("\t")[2] for line in log[1:]] == ["first_champion", "promoted", "refused", "rolled_back"]
    assert repo.dvc("status").stdout.strip() == "Data and pipelines are up to date."

    mlflow_server.stop()
    down = command("tracking.rollback")
    assert down.returncode == 2 and down.stdout == ""
    assert down.stderr == (f"error: the MLflow tracking server at {mlflow_server.uri} does not answer (connection "
                           "refused); start it, or point MLFLOW_TRACKING_URI at one that runs.\n")
