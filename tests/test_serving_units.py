"""The service's parts that need no server: which model is served and its reload, the last good
model, and exported (pt2) models placed on one device."""
from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lifecycle.core.errors import UserError
from lifecycle.inference import Predictor, load_predictor, require_device, tensor_devices
from serving.app import readiness
from serving.last_good import LastGood
from serving.model_source import ServedModel, State, choose_model, folder_key
from tests.test_serving import make_model
from tracking.mlflow_model import place_exported
from tracking.registry import RegistryUnavailable


# --- which model: SERVE_MODEL, else the champion alias, else models/best --------------------------

class FakeRegistry:
    """The alias lookups of tracking.registry.Registry, answered from a dict (or failing on demand)."""

    def __init__(self, aliases: dict[str, str] | None = None) -> None:
        self.store = self.shown = "sqlite:///fake.db"
        self.aliases = aliases or {}
        self.down = False

    def alias_version(self, name: str, alias: str) -> str | None:
        if self.down:
            raise RegistryUnavailable(f"{self.store}: database is locked")
        return self.aliases.get(f"{name}@{alias}")


class Loads:
    """A loader that records what it was asked for and returns a real tiny predictor per source."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.asked: list[str] = []

    def __call__(self, source: str) -> Predictor:
        self.asked.append(source)
        predictor = load_predictor(self.folder)
        version = source.rsplit("/", 1)[-1] if source.startswith("models:/") else predictor.identity.version
        return Predictor(predictor.model, predictor.spec, dataclasses.replace(predictor.identity, version=version),
                         predictor.device)


def test_without_a_tracking_store_the_default_is_models_best(tmp_path):
    best = make_model(tmp_path / "best")
    choice = choose_model(None, None, best)
    assert choice.load == str(best)
    assert "no tracking store" in choice.reason


def test_a_store_without_the_champion_alias_means_models_best(tmp_path):
    best = make_model(tmp_path / "best")
    choice = choose_model(None, FakeRegistry({"cats-vs-dogs@candidate": "4"}), best)
    assert choice.load == str(best)
    assert "has no cats-vs-dogs@champion" in choice.reason


def test_the_champion_alias_is_the_default_and_loaded_by_its_version(tmp_path):
    choice = choose_model(None, FakeRegistry({"cats-vs-dogs@champion": "3"}), tmp_path / "best")
    assert choice.load == "models:/cats-vs-dogs/3"  # the version, so the alias cannot move mid-load
    assert choice.shown == "models:/cats-vs-dogs@champion"
    assert "version 3" in choice.reason


def test_serve_model_wins_over_the_default(tmp_path):
    folder = make_model(tmp_path / "mine")
    choice = choose_model(str(folder), FakeRegistry({"cats-vs-dogs@champion": "3"}), tmp_path / "best")
    assert choice.load == str(folder) and choice.reason == "SERVE_MODEL names it."
    alias = choose_model("models:/other@prod", FakeRegistry({"other@prod": "7"}))
    assert alias.load == "models:/other/7" and alias.shown == "models:/other@prod"
    with pytest.raises(UserError, match="no model other with the alias staging"):
        choose_model("models:/other@staging", FakeRegistry())
    with pytest.raises(UserError, match="needs a tracking store"):
        choose_model("models:/other@prod", None)


def test_an_unreadable_registry_at_start_serves_nothing_and_says_why(tmp_path):
    registry = FakeRegistry()
    registry.down = True
    served = ServedModel(None, registry=registry, best=make_model(tmp_path / "best"))
    assert served.current is None  # never models/best instead: it may not be the champion
    assert re.search("cannot read the model registry.*database is locked.*SERVE_MODEL=models/best", served.state.failure)
    registry.down = False  # the store answers again: no champion, so the folder
    assert served.refresh() is True and served.state.failure is None


def test_the_served_model_follows_the_champion_alias(tmp_path, caplog):
    best = make_model(tmp_path / "best")
    registry = FakeRegistry()
    loads = Loads(best)
    served = ServedModel(None, load=loads, registry=registry, best=best)
    assert served.current.choice.shown.endswith("best")
    assert served.refresh() is False  # nothing changed: nothing loaded again
    assert loads.asked == [str(best)]

    registry.aliases["cats-vs-dogs@champion"] = "1"
    with caplog.at_level(logging.INFO, logger="serving"):
        assert served.refresh() is True
    assert served.current.predictor.identity.version == "1"
    assert served.current.predictor.identity.source == "models:/cats-vs-dogs@champion"
    assert "now serving models:/cats-vs-dogs@champion" in caplog.text

    registry.aliases["cats-vs-dogs@champion"] = "2"  # promotion moved the alias
    assert served.refresh() is True and served.current.predictor.identity.version == "2"

    registry.down = True  # a hiccup keeps the champion; it never falls back to models/best
    assert served.refresh() is False and served.current.predictor.identity.version == "2"
    registry.down = False
    del registry.aliases["cats-vs-dogs@champion"]  # no champion any more: back to the folder
    assert served.refresh() is True and served.current.choice.load == str(best)


def test_a_replaced_model_folder_is_reloaded_and_a_broken_one_is_not(tmp_path):
    folder = make_model(tmp_path / "best", seed=0)
    served = ServedModel(str(folder), registry=None)
    first = served.current.predictor.identity.version
    time.sleep(0.01)
    make_model(folder, seed=1)  # what `dvc repro select` / `dvc checkout` does to models/best
    assert served.refresh() is True
    assert served.current.predictor.identity.version not in (first, None)

    second = served.current
    (folder / "model.pt").write_bytes(b"half a file")
    assert served.refresh() is False and served.current is second  # the old model keeps answering
    assert served.refresh() is False  # and the broken files are not loaded again every poll


def test_folder_key_changes_when_a_file_is_replaced(tmp_path):
    folder = make_model(tmp_path / "m", seed=0)
    before = folder_key(folder)
    assert folder_key(folder) == before
    make_model(folder, seed=1)
    assert folder_key(folder) != before


def test_the_watcher_swaps_the_model_and_stops_with_its_owner(tmp_path):
    folder = make_model(tmp_path / "best", seed=0)
    served = ServedModel(str(folder), registry=None)
    first = served.current.predictor.identity.version
    thread = served.watch(0.1)
    make_model(folder, seed=2)
    deadline = time.monotonic() + 20
    while served.current.predictor.identity.version == first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.current.predictor.identity.version != first
    del served
    thread.join(timeout=5)
    assert not thread.is_alive()


# --- a model that does not load: the last good one, readiness ------------------------------------

def corrupt(folder: Path, truncate: bool = False) -> None:
    """What the colleague did to models/best: the weights truncated, or overwritten with random bytes."""
    weights = folder / "model.pt"
    data = weights.read_bytes()[: len(weights.read_bytes()) // 2] if truncate else np.random.default_rng(0).bytes(4096)
    time.sleep(0.01)  # a new modification time, so the change is seen even where the inode is kept
    weights.write_bytes(data)


@pytest.fixture
def last_good(tmp_path) -> LastGood:
    (tmp_path / "private").mkdir()
    return LastGood(tmp_path / "private")


def test_a_new_worker_falls_back_to_the_last_model_that_loaded_and_says_why(tmp_path, last_good):
    best = make_model(tmp_path / "best", seed=0)
    first = ServedModel(str(best), registry=None, last_good=last_good)  # a worker that loaded it
    version = first.current.predictor.identity.version
    corrupt(best)
    assert first.refresh() is False and first.current.predictor.identity.version == version
    assert f"{best}/model.pt could not be loaded" in first.state.failure

    second = ServedModel(str(best), registry=None, last_good=last_good)  # its replacement, after HUP or a kill
    assert second.current is not None and second.current.predictor.identity.version == version
    assert second.current.predictor.identity.source == str(best)  # shown as the folder it came from
    assert f"{best}/model.pt could not be loaded" in second.state.failure
    body, status = readiness(second.state)
    assert status == 200 and body["status"] == "degraded" and body["model"]["version"] == version
    assert "serving the last model that loaded instead" in body["problem"]
    data = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(second.current.predictor.predict(data), first.current.predictor.predict(data))
    assert second.refresh() is False  # the same broken files are not loaded again every poll

    make_model(best, seed=1)  # a good model returns
    assert second.refresh() is True and second.state.failure is None
    assert readiness(second.state)[0]["status"] == "ok"
    assert second.current.predictor.identity.version != version


def test_without_a_last_good_model_a_worker_starts_with_none_and_serves_the_first_good_one(tmp_path, last_good):
    best = make_model(tmp_path / "best", seed=0)
    corrupt(best, truncate=True)
    served = ServedModel(str(best), registry=None, last_good=last_good)
    assert served.current is None and f"{best}/model.pt could not be loaded" in served.state.failure
    body, status = readiness(served.state)
    assert status == 503 and body["status"] == "unavailable" and body["model"] is None
    assert last_good.read() is None  # what did not load is never kept
    assert served.refresh() is False
    make_model(best, seed=0)
    assert served.refresh() is True and readiness(served.state)[1] == 200
    assert last_good.read() is not None


def test_a_broken_sidecar_is_named(tmp_path):
    best = make_model(tmp_path / "best")
    (best / "model.json").write_text("{not json")
    served = ServedModel(str(best), registry=None)
    assert served.current is None and served.state.failure.startswith(f"{best}/model.json is not a readable")


def test_only_what_loaded_is_kept_and_old_copies_are_removed(tmp_path, last_good):
    best = make_model(tmp_path / "best", seed=0)
    served = ServedModel(str(best), registry=None, last_good=last_good)
    for seed in range(1, 5):
        make_model(best, seed=seed)
        assert served.refresh() is True
    folder, record = last_good.read()
    assert record["identity"]["version"] == served.current.predictor.identity.version
    assert (folder / "model.pt").read_bytes() == (best / "model.pt").read_bytes()
    assert len(list(last_good.copies.iterdir())) <= 3  # no staging left behind, old copies pruned
    corrupt(best)
    assert served.refresh() is False and last_good.read()[0] == folder


def test_readiness_is_ok_degraded_or_unavailable(tmp_path):
    served = ServedModel(None, predictor=load_predictor(make_model(tmp_path / "m"))).current
    ok, status = readiness(State(served, None))
    assert status == 200 and ok["status"] == "ok" and "problem" not in ok
    degraded, status = readiness(State(served, "models/best/model.pt could not be loaded: bad zip."))
    assert status == 200 and degraded["status"] == "degraded"
    assert degraded["problem"].startswith("models/best/model.pt could not be loaded: bad zip; serving the last")
    unavailable, status = readiness(State(None, "models/best/model.pt could not be loaded: bad zip."))
    assert status == 503 and unavailable["status"] == "unavailable" and "models/best/model.pt" in unavailable["problem"]


# --- exported (pt2) models land on one device -----------------------------------------------------

class BakesADevice(nn.Module):
    """A forward that creates a tensor on the input's device: export records that device in the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + torch.ones(2, device=x.device) + torch.tensor([1.0, 2.0])


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    example = torch.zeros(2, 4)
    program = torch.export.export(BakesADevice().eval(), (example,),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    torch.export.save(program, str(path))
    return path


def test_an_exported_model_is_moved_whole_weights_constants_and_graph(exported):
    """On CPU, "meta" stands in for a second device (no GPU here): everything must land there."""
    moved = place_exported(exported, torch.device("meta"))
    assert tensor_devices(moved) == {torch.device("meta")}
    require_device(moved, torch.device("meta"), "test")
    assert moved(torch.zeros(3, 4, device="meta")).device.type == "meta"


def test_moving_only_the_weights_is_caught_not_run(exported):
    """What inference.py did before: module.to(device) leaves the graph's device and a constant behind."""
    naive = torch.export.load(str(exported)).module().to("meta")
    assert torch.device("cpu") in tensor_devices(naive)
    with pytest.raises(UserError, match="did not land on meta"):
        require_device(naive, torch.device("meta"), "models:/cats-vs-dogs/1")


def test_on_the_device_it_was_exported_for_it_answers_as_before(exported):
    model = place_exported(exported, torch.device("cpu"))
    require_device(model, torch.device("cpu"), "test")
    x = torch.randn(3, 4)
    np.testing.assert_allclose(model(x).detach().numpy(), torch.export.load(str(exported)).module()(x).detach().numpy())


def test_a_failed_move_is_an_error_naming_the_device(exported, monkeypatch):
    import torch.export.passes as passes

    def refuse(program, device):
        raise RuntimeError("no such device")
    monkeypatch.setattr(passes, "move_to_device_pass", refuse)
    with pytest.raises(UserError, match="cannot move the exported model .* to cuda:0: no such device"):
        place_exported(exported, torch.device("cuda:0"))
