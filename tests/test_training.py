"""The one training loop: it learns, keeps the best epoch, is deterministic, honours
per-group learning rates and the on-the-fly transform, logs with DVCLive, and runs under
torchrun with two CPU processes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lifecycle.augmentation import Augmenting
from lifecycle.backbones import finetune_groups
from lifecycle.core.params import load_params
from lifecycle.models import ModelSpec, build_model, predict_logits, save_model
from lifecycle.training.log import EpochLog
from lifecycle.training.loop import FitConfig, Samples, fit
from lifecycle.training.runtime import Cluster, batch_seed, seed_everything
from tests.conftest import ROOT, env_with_venv
from tests.distributed_fit import separable_images


@pytest.fixture
def separable() -> tuple[Samples, Samples]:
    images, labels = separable_images(96, seed=1)
    return Samples.from_images(images[:64], labels[:64]), Samples.from_images(images[64:], labels[64:])


def tiny_cnn() -> nn.Module:
    spec = ModelSpec(architecture="seed_cnn", classes=["cat", "dog"], image_size=16, arguments={"channels": [8]})
    return build_model(spec)


def test_loss_goes_down_and_the_model_learns(separable):
    train, val = separable
    seed_everything(0)
    model = tiny_cnn()
    result = fit(model, train, val, FitConfig(epochs=5, batch_size=16, lr=0.01, seed=0))
    assert len(result.history) == 5
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.best.val_accuracy >= 0.9


def test_a_later_worse_epoch_gives_way_to_the_earlier_best_weights():
    """Validation labels are the opposite of training labels, and the head starts out right
    about validation: every epoch of training makes validation worse, so the first epoch is
    the best, and the model must end with its weights, not the last epoch's."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 96)
    features = torch.from_numpy((rng.normal(scale=0.3, size=(96, 2)) + (labels[:, None] * 2.0 - 1.0)).astype("float32"))
    train = Samples(features[:64], torch.from_numpy(labels[:64]))
    val = Samples(features[64:], torch.from_numpy(1 - labels[64:]))  # flipped
    head = nn.Linear(2, 2)
    with torch.no_grad():  # right about validation at the start: class 1 for negative x
        head.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        head.bias.zero_()
    snapshots = []
    result = fit(head, train, val, FitConfig(epochs=8, batch_size=16, lr=0.05, seed=0), prepare=lambda batch: batch,
                 on_epoch=lambda record: snapshots.append({k: v.clone() for k, v in head.state_dict().items()}))
    history = {record.epoch: record for record in result.history}
    assert result.best_epoch == 1
    assert history[8].val_accuracy < history[1].val_accuracy  # a later epoch really is worse
    assert not torch.equal(snapshots[-1]["weight"], snapshots[0]["weight"])
    for name, value in head.state_dict().items():  # ... and the earlier weights came back
        assert torch.equal(value, snapshots[0][name]), name
    logits = predict_logits(head, val.inputs, lambda batch: batch)
    assert float((logits.argmax(1) == val.labels).float().mean()) == pytest.approx(history[1].val_accuracy)
    assert result.summary()["val"]["accuracy"] == history[1].val_accuracy


def _train_and_save(train: Samples, val: Samples, folder: Path, on_epoch=None) -> bytes:
    seed_everything(7)
    model = tiny_cnn()
    fit(model, train, val, FitConfig(epochs=2, batch_size=16, lr=0.01, seed=7),
        transform=Augmenting(load_params().augment), on_epoch=on_epoch)
    spec = ModelSpec(architecture="seed_cnn", classes=["cat", "dog"], image_size=16, arguments={"channels": [8]})
    save_model(model, spec, folder)
    return (folder / "model.pt").read_bytes()


def test_same_params_give_byte_identical_model_files_whatever_else_draws_random_numbers(separable, tmp_path):
    """The augmentation draws from its own generator per batch: a run that also draws from
    torch's global generator between epochs ends with the same bytes."""
    train, val = separable
    first = _train_and_save(train, val, tmp_path / "a")
    second = _train_and_save(train, val, tmp_path / "b")
    disturbed = _train_and_save(train, val, tmp_path / "c", on_epoch=lambda record: torch.rand(1000))
    assert first == second
    assert first == disturbed
    assert (tmp_path / "a" / "model.json").read_bytes() == (tmp_path / "b" / "model.json").read_bytes()


class RecordingTransform:
    """A batch transform that records what it was given and the first number of each generator."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float, torch.Tensor]] = []

    def __call__(self, images, labels, generator):
        self.calls.append((len(images), float(torch.rand((), generator=generator, dtype=torch.float64)), images.clone()))
        return images, labels


def test_every_batch_of_every_epoch_draws_from_its_own_reproducible_generator(separable):
    train, val = separable
    runs = []
    for _ in range(2):
        seed_everything(0)
        recording = RecordingTransform()
        fit(tiny_cnn(), train, val, FitConfig(epochs=2, batch_size=16, lr=0.01, seed=3), transform=recording)
        runs.append(recording.calls)
    first, second = runs
    assert [size for size, _, _ in first] == [16] * 8  # 64 images, 4 batches, 2 epochs
    draws = [draw for _, draw, _ in first]
    assert len(set(draws)) == len(draws)  # a new generator per batch and epoch
    expected = [float(torch.rand((), generator=torch.Generator().manual_seed(batch_seed(3, epoch, 0, number)),
                                 dtype=torch.float64)) for epoch in (1, 2) for number in range(4)]
    assert draws == expected
    assert draws == [draw for _, draw, _ in second]
    assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(first, second))
    # each epoch sees every training image exactly once, as uint8 on the device
    epoch_images = torch.cat([images for _, _, images in first[:4]])
    assert epoch_images.dtype == torch.uint8
    assert sorted(map(bytes, epoch_images.flatten(1).numpy())) == sorted(map(bytes, train.inputs.flatten(1).numpy()))


def test_batch_seeds_differ_by_epoch_rank_and_batch():
    seeds = {batch_seed(0, epoch, rank, batch) for epoch in range(3) for rank in range(2) for batch in range(3)}
    assert len(seeds) == 18
    assert batch_seed(1, 1, 0, 0) != batch_seed(0, 1, 0, 0)


def test_each_parameter_group_trains_at_its_own_learning_rate(separable):
    train, val = separable
    seed_everything(0)
    model = build_model(ModelSpec(architecture="resnet18", classes=["cat", "dog"], image_size=16))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    groups = finetune_groups(model, lr_backbone=0.0, lr_head=0.01)
    fit(model, Samples(train.inputs[:16], train.labels[:16]), Samples(val.inputs[:8], val.labels[:8]),
        FitConfig(epochs=1, batch_size=8, lr=0.01, seed=0), param_groups=groups)
    after = dict(model.named_parameters())
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert torch.equal(before["conv1.weight"], after["conv1.weight"])
    assert torch.equal(before["layer4.1.conv2.weight"], after["layer4.1.conv2.weight"])


def test_features_train_without_image_preparation():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 80)
    features = torch.from_numpy((rng.normal(size=(80, 6)) + labels[:, None] * 2.0).astype("float32"))
    data = Samples(features, torch.from_numpy(labels))
    seed_everything(0)
    head = nn.Linear(6, 2)
    result = fit(head, Samples(data.inputs[:60], data.labels[:60]), Samples(data.inputs[60:], data.labels[60:]),
                 FitConfig(epochs=20, batch_size=16, lr=0.05, seed=0), prepare=lambda batch: batch)
    assert result.best.val_accuracy >= 0.85


def test_epoch_log_writes_dvclive_curves_and_the_kept_epoch_without_dvc_yaml(separable, tmp_path):
    train, val = separable
    seed_everything(0)
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "metrics.json").write_text("the committed summary\n")
    log = EpochLog(tmp_path / "live")
    result = fit(tiny_cnn(), train, val, FitConfig(epochs=3, batch_size=16, lr=0.01, seed=0), on_epoch=log.log)
    # until the run ends, the committed folder is untouched: DVCLive writes beside it
    assert (tmp_path / "live" / "metrics.json").read_text() == "the committed summary\n"
    assert [p.name for p in tmp_path.iterdir() if p.name != "live"] == [log.staging.name]
    log.close(result.summary())
    assert [p.name for p in tmp_path.iterdir()] == ["live"]
    summary = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert summary["best_epoch"] == result.best_epoch
    assert summary["val"]["accuracy"] == pytest.approx(result.best.val_accuracy)
    rows = (tmp_path / "live" / "plots" / "metrics" / "val" / "accuracy.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "accuracy"]
    assert [int(r.split("\t")[0]) for r in rows[1:]] == [1, 2, 3]
    for split in ("train", "val"):
        for metric in ("loss", "accuracy"):
            assert (tmp_path / "live" / "plots" / "metrics" / split / f"{metric}.tsv").is_file()
    assert not list(tmp_path.rglob("dvc.yaml"))
    assert not (tmp_path / "live" / "report.html").exists()


def test_a_failed_run_leaves_the_committed_curves_as_they_were(separable, tmp_path):
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "metrics.json").write_text("the committed summary\n")
    log = EpochLog(tmp_path / "live")
    train, val = separable
    fit(tiny_cnn(), train, val, FitConfig(epochs=1, batch_size=16, lr=0.01, seed=0), on_epoch=log.log)
    log.discard()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["live", "metrics.json"]
    assert (tmp_path / "live" / "metrics.json").read_text() == "the committed summary\n"


@pytest.mark.slow
def test_two_cpu_processes_under_torchrun_agree_and_only_rank_0_writes(tmp_path):
    env = env_with_venv()
    env["PYTHONPATH"] = str(ROOT)
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "tests" / "distributed_fit.py"), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # the same weights in both processes
    assert ranks[0]["best_epoch"] == ranks[1]["best_epoch"]
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["world_size"] == 2
    assert summary["val"]["accuracy"] >= 0.9
    assert (tmp_path / "model" / "model.pt").is_file()
    assert (tmp_path / "live" / "metrics.json").is_file()
    # progress lines come from rank 0 only: one line per epoch
    assert result.stdout.count("ddp epoch 1/4") == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("architecture", ["seed_cnn", "resnet18", "vgg16"])
def test_on_cuda_the_same_loop_is_deterministic(architecture, tmp_path):
    images, labels = separable_images(48, seed=2, size=32)
    train, val = Samples.from_images(images[:32], labels[:32]), Samples.from_images(images[32:], labels[32:])
    spec = ModelSpec(architecture, ["cat", "dog"], 32, arguments={"channels": [8, 16]} if architecture == "seed_cnn" else {})
    cluster = Cluster(device=torch.device("cuda", 0))
    files = []
    for run in ("a", "b"):
        seed_everything(5)
        model = build_model(spec)
        fit(model, train, val, FitConfig(epochs=2, batch_size=8, lr=0.001, seed=5), cluster=cluster,
            transform=Augmenting(load_params().augment))
        assert next(model.parameters()).is_cuda
        save_model(model, spec, tmp_path / run)
        files.append((tmp_path / run / "model.pt").read_bytes())
    assert files[0] == files[1]


def test_a_stage_that_fits_several_models_logs_each_under_its_prefix_and_reports_its_own_summary(tmp_path: Path):
    """pretrain's use of FitStage: log_under names each series, report replaces the last fit's summary."""
    from lifecycle.training.loop import EpochRecord
    from lifecycle.training.stage import fit_stage

    with fit_stage("several", log_dir=tmp_path / "live") as stage:
        for prefix in ("a/", "b/"):
            stage.log_under(prefix)
            stage.log.log(EpochRecord(epoch=1, train_loss=0.5, train_accuracy=0.5, val_loss=0.5, val_accuracy=0.5))
        stage.report({"a": {"weights": "pretext"}, "b": {"weights": "none"}})
    curves = tmp_path / "live" / "plots" / "metrics"
    assert (curves / "a" / "val" / "accuracy.tsv").is_file() and (curves / "b" / "val" / "accuracy.tsv").is_file()
    summary = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert summary["a"] == {"weights": "pretext"} and summary["b"] == {"weights": "none"}
