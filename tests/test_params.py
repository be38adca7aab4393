"""The one params loader: the whole params.yaml validated by pydantic, one sentence per mistake."""
from __future__ import annotations

import copy

import pytest
import yaml
from pydantic import BaseModel

from lifecycle.core.errors import UserError
from lifecycle.core.params import load_params, validate
from lifecycle.core.schema import PipelineParams, SyntheticParams
from lifecycle.models import check_architecture
from lifecycle.tuning import check_tune_params
from tests.conftest import ROOT

COMMITTED = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_change(path: str, value) -> dict:
    """The committed params with one key (dotted path) set to ``value``."""
    document = copy.deepcopy(COMMITTED)
    *parents, last = path.split(".")
    target = document
    for part in parents:
        target = target[part]
    target[last] = value
    return document


def error_for(document: dict) -> str:
    with pytest.raises(UserError) as error:
        validate(PipelineParams, document, where="params.yaml")
    return str(error.value)


def test_the_committed_params_load_through_every_section_schema_model_sections_included():
    params = load_params()
    assert params.model_dump() == COMMITTED  # every key known to the schema, none filled in behind the file's back
    for section in ("ingest", "preprocess", "impute", "featurize", "split", "synthesize", "augment", "visualize",
                    "predict", "tune", "train", "pretrain", "finetune", "transfer", "select", "promote"):
        assert getattr(params, section).model_dump() == COMMITTED[section]
    # the checks that need torchvision or skorch, on the committed values
    check_architecture(params.train.architecture, "train.architecture", allow_seed_cnn=True)
    check_architecture(params.finetune.architecture, "finetune.architecture", allow_seed_cnn=False)
    check_architecture(params.transfer.architecture, "transfer.architecture", allow_seed_cnn=False)
    check_tune_params(params.tune)


@pytest.mark.parametrize(
    "path, value, sentence",
    [
        ("lr", "fast", "params.yaml: 'lr' must be a number, got str 'fast'."),
        ("lr", 0, "params.yaml: 'lr' must be greater than 0.0, got int 0."),
        ("epochs", True, "params.yaml: 'epochs' must be an integer, got bool True."),
        ("epochs", 1.5, "params.yaml: 'epochs' must be an integer, got float 1.5."),
        ("ingest.source", "flickr", "params.yaml: 'ingest.source' must be one of 'synthetic', 'kaggle', 'imagefolder' "
                                    "or 'csv', got str 'flickr'."),
        ("ingest.synthetic.count", 3, "params.yaml: 'ingest.synthetic.count' must be at least 10, got int 3."),
        ("ingest.synthetic.max_size", 20, "params.yaml: 'ingest.synthetic.max_size' must be at least min_size (48), "
                                          "got 20."),
        ("ingest.path", " ", "params.yaml: 'ingest.path' must name a file or folder."),
        ("train.channels", [16, "x"], "params.yaml: 'train.channels[1]' must be an integer, got str 'x'."),
        ("train.augment", "yes", "params.yaml: 'train.augment' must be true or false, got str 'yes'."),
        ("preprocess.label_aliases", {"kitten": "cow"},
         "params.yaml: 'preprocess.label_aliases.kitten' maps to 'cow', which is not in classes."),
        ("preprocess.drop_columns", "Unnecessary_Column",
         "params.yaml: 'preprocess.drop_columns' must be a list, got str 'Unnecessary_Column'."),
        ("split", [0.1, 0.1], "params.yaml: 'split' must be a mapping, got list [0.1, 0.1]."),
        ("augment.hflip", 2, "params.yaml: 'augment.hflip' must be at most 1.0, got int 2."),
        ("predict.input", " ", "params.yaml: 'predict.input' must name a folder."),
        ("promote.metric", "loss", "params.yaml: 'promote.metric' must be one of 'accuracy', 'precision', 'recall', "
                                   "'f1' or 'roc_auc', got str 'loss'."),
        ("promote.margin", -0.01, "params.yaml: 'promote.margin' must be at least 0.0, got float -0.01."),
    ],
)
def test_a_wrong_value_is_one_sentence_naming_the_full_key(path, value, sentence):
    assert error_for(with_change(path, value)) == sentence


def test_unknown_and_missing_keys_are_named_with_what_is_known():
    typo = copy.deepcopy(COMMITTED)
    typo["train"]["chanels"] = [8]
    assert error_for(typo).startswith("params.yaml: unknown key 'train.chanels'; known keys are: architecture, augment, "
                                      "channels, weight_decay.")
    top = {**COMMITTED, "learning_rate": 0.1}
    assert error_for(top).startswith("params.yaml: unknown key 'learning_rate'; known keys are: augment, batch_size,")
    missing = copy.deepcopy(COMMITTED)
    del missing["split"]
    assert error_for(missing) == "params.yaml: missing key 'split'."


def test_a_constraint_across_sections_stops_the_first_stage_before_any_work():
    """featurize.image_size 63 cannot feed the seed CNN's three pooling blocks: featurize says so."""
    assert error_for(with_change("featurize.image_size", 63)) == (
        "params.yaml: 'featurize.image_size' is 63, which train.channels (3 pooling blocks) needs divisible by 8.")
    # a torchvision architecture has no such constraint (60 suits tune's one block) ...
    document = with_change("featurize.image_size", 60)
    document["train"]["architecture"] = "resnet18"
    assert validate(PipelineParams, document).featurize.image_size == 60
    # ... but tune's conv stack still has one
    document["tune"]["channels"] = [8, 16, 32]
    assert error_for(document) == ("params.yaml: 'featurize.image_size' is 60, which tune's conv stack [8, 16, 32] "
                                   "(3 pooling blocks) needs divisible by 8.")


def test_the_featurize_stage_refuses_a_size_train_cannot_take_before_writing_anything(repo_copy):
    repo = repo_copy({"featurize": {"image_size": 36}})
    result = repo.run("python", "-m", "stages.featurize", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: params.yaml: 'featurize.image_size' is 36, which train.channels "
                                     "(3 pooling blocks) needs divisible by 8.")
    assert not (repo.path / "data/processed/features.npz").exists()


def test_checks_that_need_torchvision_or_skorch_name_the_key():
    with pytest.raises(UserError, match="'finetune.architecture' is 'resnet1000', which is not a torchvision"):
        check_architecture("resnet1000", "finetune.architecture", allow_seed_cnn=False)
    tune = load_params().tune.model_copy(update={"grid": {"momentum": [0.9]}})
    with pytest.raises(UserError, match="'tune.grid.momentum' is not a parameter the tuned net accepts"):
        check_tune_params(tune)


def test_load_params_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(with_change("ingest.source", "flickr")))
    with pytest.raises(UserError) as error:
        load_params(path)
    assert str(error.value).startswith(f"{path}: 'ingest.source' must be one of")
    path.write_text("seed: [unclosed\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        load_params(path)


def test_sections_validate_alone_for_library_callers():
    synthetic = COMMITTED["ingest"]["synthetic"]
    assert SyntheticParams.model_validate({**synthetic, "count": 200}).count == 200
    with pytest.raises(UserError, match="'ingest.synthetic.count' must be at least 10"):
        validate(SyntheticParams, {**synthetic, "count": 1}, prefix="ingest.synthetic.")


def keys(schema: type[BaseModel], prefix: str = "") -> list[str]:
    """Every key the schema knows, dotted, sections' own keys included."""
    found = []
    for name, field in schema.model_fields.items():
        found.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found += keys(field.annotation, f"{prefix}{name}.")
    return found


def test_params_yaml_is_the_one_home_of_every_value_so_each_key_must_be_there():
    """No default hides behind the file: dropping any key from params.yaml is one sentence naming it."""
    assert len(keys(PipelineParams)) > 100
    for key in keys(PipelineParams):
        document = copy.deepcopy(COMMITTED)
        *parents, last = key.split(".")
        section = document
        for part in parents:
            section = section[part]
        del section[last]
        assert error_for(document) == f"params.yaml: missing key '{key}'.", key
