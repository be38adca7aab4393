import dataclasses
from typing import Literal

import pytest

from lifecycle.errors import UserError
from lifecycle.params import from_mapping, load_params, require
from lifecycle.sources import IngestParams


@dataclasses.dataclass(frozen=True)
class Inner:
    size: int = 3

    def __post_init__(self):
        require(self.size > 0, "size", "must be positive")


@dataclasses.dataclass(frozen=True)
class Schema:
    name: str
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"
    flag: bool = False
    items: list[str] = dataclasses.field(default_factory=list)
    inner: Inner = dataclasses.field(default_factory=Inner)
    path: str | None = None


def test_valid_mapping_fills_defaults_and_coerces_ints_to_floats():
    params = from_mapping(Schema, {"name": "x", "rate": 1, "inner": {"size": 5}})
    assert params == Schema(name="x", rate=1.0, inner=Inner(size=5))
    assert isinstance(params.rate, float)


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"name": "x", "typo": 1}, "unknown key 'stage.typo'"),
        ({}, "missing key 'stage.name'"),
        ({"name": 3}, "'stage.name' must be a string"),
        ({"name": "x", "rate": "fast"}, "'stage.rate' must be a number"),
        ({"name": "x", "rate": True}, "'stage.rate' must be a number"),
        ({"name": "x", "mode": "c"}, "'stage.mode' must be one of 'a', 'b'"),
        ({"name": "x", "flag": "yes"}, "'stage.flag' must be true or false"),
        ({"name": "x", "items": "a"}, "'stage.items' must be a list"),
        ({"name": "x", "inner": {"size": 1.5}}, "'stage.inner.size' must be an integer"),
        ({"name": "x", "inner": {"size": -1}}, "'stage.inner.size' must be positive"),
    ],
)
def test_bad_values_name_the_full_key(values, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        from_mapping(Schema, values, prefix="stage.")


def test_load_params_names_the_file_and_section(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\ningest:\n  source: flickr\n")
    with pytest.raises(UserError) as error:
        load_params("ingest", IngestParams, path)
    assert "ingest.source" in str(error.value) and "flickr" in str(error.value)
    with pytest.raises(UserError, match="no 'split' section"):
        load_params("split", IngestParams, path)


def test_repository_params_file_loads_for_every_data_stage():
    from lifecycle.augmentation import AugmentParams
    from lifecycle.cleaning import ImputeParams, PreprocessParams
    from lifecycle.features import FeaturizeParams
    from lifecycle.params import GlobalParams
    from lifecycle.splitting import SplitParams
    from lifecycle.synthesis import SynthesizeParams

    for section, schema in [
        ("ingest", IngestParams), ("preprocess", PreprocessParams), ("impute", ImputeParams),
        ("featurize", FeaturizeParams), ("split", SplitParams), ("synthesize", SynthesizeParams),
        ("augment", AugmentParams),
    ]:
        assert isinstance(load_params(section, schema), schema)
    assert load_params(None, GlobalParams).seed >= 0
