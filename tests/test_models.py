"""Architectures at the configured image size, the model files, the heads of pretrained
backbones, the pretext task, ImageNet weights offline, and the one-sentence errors bad
params give before any training."""
from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from lifecycle.backbones import (
    FeatureScaling,
    attach_head,
    feature_extractor,
    frozen_features,
    load_backbone,
)
from lifecycle.core import numerics
from lifecycle.core.errors import UserError
from lifecycle.core.params import load_params
from lifecycle.models import (
    ModelSpec,
    build_model,
    check_architecture,
    check_image_size,
    head_layer,
    image_preparer,
    load_model,
    save_model,
)
from lifecycle.pretraining import (
    ROTATIONS,
    RotationPretext,
    fetch_imagenet,
    pretext_spec,
    rotated_for_validation,
)
from tests.conftest import ROOT

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
IMAGE_SIZE = PARAMS["featurize"]["image_size"]
CLASSES = ["cat", "dog"]


def configured_specs() -> list[ModelSpec]:
    """Every architecture the default pipeline trains, plus the seed's vgg16."""
    names = {PARAMS["finetune"]["architecture"], PARAMS["transfer"]["architecture"], "vgg16"}
    seed_cnn = ModelSpec("seed_cnn", CLASSES, IMAGE_SIZE, arguments={"channels": PARAMS["train"]["channels"]})
    return [seed_cnn] + [ModelSpec(name, CLASSES, IMAGE_SIZE) for name in sorted(names)]


@pytest.mark.parametrize("spec", configured_specs(), ids=lambda spec: spec.architecture)
def test_each_architecture_gives_one_logit_per_class_at_the_configured_image_size(spec):
    torch.manual_seed(0)
    model = build_model(spec).eval()
    with torch.no_grad():
        logits = model(torch.zeros(2, 3, spec.image_size, spec.image_size))
    assert logits.shape == (2, len(CLASSES))
    check_image_size(model, spec.architecture, spec.image_size)


def test_model_files_round_trip_and_identical_weights_give_identical_bytes(tmp_path):
    spec = ModelSpec("seed_cnn", CLASSES, 16, arguments={"channels": [4, 8]}, info={"stage": "test"})
    torch.manual_seed(0)
    model = build_model(spec)
    save_model(model, spec, tmp_path / "a")
    save_model(model, spec, tmp_path / "b")
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()
    loaded, loaded_spec = load_model(tmp_path / "a")
    assert loaded_spec == dataclasses.replace(spec, info={"stage": "test", "numerics": numerics.determinants("cpu")})
    x = torch.randn(3, 3, 16, 16)
    assert torch.equal(model.eval()(x), loaded(x))


@pytest.mark.parametrize("name, attribute", [("resnet18", "fc"), ("vgg16", "classifier.6"), ("mobilenet_v3_small", "classifier.3")])
def test_the_head_is_the_last_classification_layer(name, attribute):
    model = build_model(ModelSpec(name, CLASSES, 32))
    assert head_layer(model) is model.get_submodule(attribute)
    assert head_layer(model).out_features == 2


def test_transfer_model_equals_the_trained_head_on_frozen_features(tmp_path):
    """Folding the feature standardisation into the head changes nothing the model outputs."""
    torch.manual_seed(0)
    spec = pretext_spec("resnet18", 32)
    save_model(build_model(spec), spec, tmp_path / "pretrained")
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    body = feature_extractor(load_backbone(tmp_path / "pretrained", 2))
    features = frozen_features(body, images, spec)
    assert features.shape == (6, 512)
    scaling = FeatureScaling.of(features)
    head = nn.Linear(512, 2)
    expected = head(scaling.apply(features))
    model = attach_head(load_backbone(tmp_path / "pretrained", 2), scaling.fold(head)).eval()
    with torch.no_grad():
        actual = model(image_preparer(spec.mean, spec.std)(images))
    torch.testing.assert_close(actual, expected.detach(), rtol=1e-4, atol=1e-4)
    assert [p.requires_grad for p in body.parameters()] == [False] * len(list(body.parameters()))


def test_the_pretext_label_is_each_images_own_rotation_applied():
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    image[:, 0, :] = 255  # a bright top row: its position after the turn tells the rotation
    batch = image.expand(32, 3, 8, 8).contiguous()
    pretext = RotationPretext(augmenting=None)
    turned, labels = pretext(batch, torch.zeros(32, dtype=torch.int64), torch.Generator().manual_seed(0))
    assert set(labels.tolist()) == set(range(len(ROTATIONS)))  # drawn per image, not per batch
    for one, label in zip(turned, labels):
        assert torch.equal(one, torch.rot90(image, int(label), dims=(1, 2)))
    again, same_labels = pretext(batch, torch.zeros(32, dtype=torch.int64), torch.Generator().manual_seed(0))
    assert torch.equal(again, turned) and torch.equal(same_labels, labels)


def test_pretext_validation_turns_image_i_by_i_mod_4_quarter_turns():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    turned, labels = rotated_for_validation(images)
    assert labels.tolist() == [0, 1, 2, 3, 0, 1]
    for image, one, label in zip(images, turned, labels):
        assert torch.equal(one, torch.rot90(image, int(label), dims=(1, 2)))


# ----------------------------------------------------------------------------- imagenet, offline


def test_imagenet_weights_are_taken_from_torch_hub_cache_offline_and_pinned_byte_for_byte(tmp_path, monkeypatch):
    """A state_dict placed where torchvision's weights API looks stands in for the download."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_internet)
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(weights.url).name
    cached.parent.mkdir(parents=True)
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), cached)

    spec = fetch_imagenet("resnet18", 64, tmp_path / "pretrained")
    written = tmp_path / "pretrained" / "model.pt"
    assert written.read_bytes() == cached.read_bytes()  # the downloaded file is the DVC output
    assert spec.info["sha256"] == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert len(spec.classes) == 1000 and spec.info["weights"] == "imagenet"
    model, loaded = load_model(tmp_path / "pretrained")
    assert torch.equal(model.conv1.weight, torch.load(cached, weights_only=True)["conv1.weight"])
    assert head_layer(load_backbone(tmp_path / "pretrained", 2)).out_features == 2


def test_imagenet_weights_missing_offline_name_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_internet)
    with pytest.raises(UserError, match=r"pretrain\.weights is imagenet .*resnet18-f37072fd\.pth"):
        fetch_imagenet("resnet18", 64, tmp_path / "pretrained")


def _no_internet(*args, **kwargs):
    raise URLError("no internet in tests")


# ----------------------------------------------------------------------------- bad params


def write_params(tmp_path: Path, **sections) -> Path:
    document = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in sections.items():
        if isinstance(value, dict):
            document[key] = {**document[key], **value}
        else:
            document[key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(
    "change, key",
    [
        ({"lr": 0}, "'lr' must be greater than 0"),
        ({"lr": -0.1}, "'lr' must be greater than 0"),
        ({"epochs": 0}, "'epochs' must be at least 1"),
        ({"batch_size": 0}, "'batch_size' must be at least 1"),
        ({"finetune": {"lr_head": 0}}, "'finetune.lr_head' must be greater than 0"),
        ({"transfer": {"epochs": 0}}, "'transfer.epochs' must be at least 1"),
        ({"pretrain": {"weights": "imagenet21k"}}, "'pretrain.weights' must be one of"),
    ],
)
def test_bad_params_are_one_sentence_naming_the_key(tmp_path, change, key):
    path = write_params(tmp_path, **change)
    with pytest.raises(UserError) as error:
        load_params(path)
    message = str(error.value)
    assert key in message
    assert message.count(". ") == 0 and "\n" not in message


@pytest.mark.parametrize(
    "name, key, allow_seed_cnn, fragment",
    [
        ("resnet1000", "train.architecture", True, "'train.architecture' is 'resnet1000', which is not seed_cnn or a"),
        ("seed_cnn", "finetune.architecture", False, "'finetune.architecture' is 'seed_cnn', which is not a torchvision"),
    ],
)
def test_an_unknown_architecture_names_the_key(name, key, allow_seed_cnn, fragment):
    with pytest.raises(UserError, match=fragment):
        check_architecture(name, key, allow_seed_cnn)


@pytest.mark.parametrize(
    "spec, key",
    [
        (ModelSpec("seed_cnn", CLASSES, 36, arguments={"channels": [16, 32, 64]}), "featurize.image_size 36 must be divisible by 8"),
        (ModelSpec("vgg16", CLASSES, 16), "featurize.image_size 16 does not fit architecture vgg16"),
        (ModelSpec("vit_b_16", CLASSES, 64), "featurize.image_size 64 does not fit architecture vit_b_16"),
    ],
)
def test_an_image_size_the_architecture_cannot_take_names_the_key(spec, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        check_image_size(build_model(spec), spec.architecture, spec.image_size)


def test_a_bad_param_stops_the_stage_with_one_line_and_exit_2_before_training(repo_copy):
    repo = repo_copy({"lr": -1.0})
    result = repo.run(sys.executable, "-m", "stages.train", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: params.yaml: 'lr' must be greater than 0.0, got float -1.0."
    assert not (repo.path / "models" / "train").exists()
    assert not (repo.path / "metrics" / "train").exists()


def test_frozen_features_draw_nothing_at_random_and_take_images_as_the_data_stages_write_them(tmp_path):
    """No seed needed: the same features whatever torch's generator holds (mobilenet's body keeps
    a dropout layer, which must be off), from (N, S, S, 3) arrays as from channels-first tensors."""
    torch.manual_seed(0)
    spec = pretext_spec("mobilenet_v3_small", 32)
    save_model(build_model(spec), spec, tmp_path / "pretrained")
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    body = feature_extractor(load_backbone(tmp_path / "pretrained", 2))
    torch.manual_seed(1)
    features = frozen_features(body, images, spec)
    torch.manual_seed(2)
    assert torch.equal(frozen_features(body, images, spec), features)
    assert torch.equal(frozen_features(body, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), spec), features)


def test_a_classifier_with_auxiliary_heads_returns_plain_logits_in_training_too():
    """What lets the training loop and the forward path take a model's output as its logits."""
    model = build_model(ModelSpec("inception_v3", CLASSES, 80)).train()
    assert type(model(torch.zeros(2, 3, 80, 80))) is torch.Tensor
