"""The schema of ``params.yaml``: one pydantic model per section, and the document as a whole.

Every stage validates the whole document before it does any work (:func:`lifecycle.core.params.load_params`),
so a mistake anywhere, and a constraint that spans sections (``featurize.image_size`` against
``train.channels``), stops the first stage that runs, not a stage minutes later: that is
``check_params`` (stages/check_params.py), before DVC removes any stage's outputs. Checks here
are cheap and need no heavy library; the few that need one (is an architecture a torchvision
classifier, is a grid key a parameter of the tuned net) run where that library is loaded:
:func:`lifecycle.models.check_architecture`, :func:`lifecycle.tuning.check_tune_params`
(check_params runs them too).

Unknown keys are errors (``extra="forbid"``), types are strict (``"3"`` is not a number,
``true`` is not an integer), and an int is accepted where a float is expected.

Every key is required, and no field has a default: ``params.yaml`` is the one home of each
value and of the comment that says what it means; this module holds only what a value may be.
A default here would be a second value, and a silent one: DVC hashes the keys params.yaml
carries, so a stage would not rerun when a default behind the file's back changed. A key
missing from params.yaml is one sentence naming it.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ParamError(ValueError):
    """Raised by a validator to blame ``field`` (relative to the model it validates)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"@{field}@{message}")


def fail_unless(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ParamError(field, message)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


LearningRate = Annotated[float, Field(gt=0.0, lt=10.0)]
Metric = Literal["accuracy", "precision", "recall", "f1", "roc_auc"]  # lifecycle.evaluation.METRIC_NAMES

# ----------------------------------------------------------------------------- data


class SyntheticParams(Section):
    count: int = Field(ge=10)
    cat_fraction: float = Field(gt=0.0, lt=1.0)
    min_size: int = Field(ge=16)
    max_size: int
    separation: float = Field(gt=0.0)
    duplicate_rows: float = Field(ge=0.0, le=0.5)
    duplicate_images: float = Field(ge=0.0, le=0.5)
    missing_labels: float = Field(ge=0.0, le=0.5)
    stray_whitespace: float = Field(ge=0.0, le=0.5)
    missing_files: float = Field(ge=0.0, le=0.5)
    truncated_files: float = Field(ge=0.0, le=0.5)
    corrupt_files: float = Field(ge=0.0, le=0.5)
    grayscale: float = Field(ge=0.0, le=0.5)
    rgba: float = Field(ge=0.0, le=0.5)
    palette: float = Field(ge=0.0, le=0.5)

    @model_validator(mode="after")
    def _sizes(self) -> "SyntheticParams":
        fail_unless(self.max_size >= self.min_size, "max_size", f"must be at least min_size ({self.min_size}), got {self.max_size}")
        return self


class IngestParams(Section):
    source: Literal["synthetic", "kaggle", "imagefolder", "csv"]
    served: bool
    path: str
    manifest: str
    path_column: str
    label_column: str
    synthetic: SyntheticParams

    @field_validator("path", "manifest")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        fail_unless(bool(value.strip()), "", "must name a file or folder")
        return value


class PreprocessParams(Section):
    drop_columns: list[str]
    classes: list[str]
    label_aliases: dict[str, str]

    @model_validator(mode="after")
    def _classes(self) -> "PreprocessParams":
        fail_unless(len(set(self.classes)) >= 2, "classes", "must name at least two distinct classes")
        for alias, target in self.label_aliases.items():
            fail_unless(target in self.classes, f"label_aliases.{alias}", f"maps to '{target}', which is not in classes")
        return self


class ImputeParams(Section):
    label_strategy: Literal["most_frequent", "drop"]


class FeaturizeParams(Section):
    image_size: int = Field(ge=16, le=512)


class SplitParams(Section):
    val_fraction: float = Field(gt=0.0, lt=0.5)
    test_fraction: float = Field(gt=0.0, lt=0.5)

    @model_validator(mode="after")
    def _room_for_training(self) -> "SplitParams":
        fail_unless(self.val_fraction + self.test_fraction < 0.8, "test_fraction",
                    "plus val_fraction must leave at least 20% for training")
        return self


class SynthesizeParams(Section):
    method: Literal["smote", "random_over", "none"]
    k_neighbors: int = Field(ge=1)


class AugmentParams(Section):
    hflip: float = Field(ge=0.0, le=1.0)
    rotation: float = Field(ge=0.0, le=180.0)
    crop_scale: float = Field(ge=0.05, le=1.0)
    brightness: float = Field(ge=0.0, le=1.0)
    contrast: float = Field(ge=0.0, le=1.0)
    saturation: float = Field(ge=0.0, le=1.0)
    hue: float = Field(ge=0.0, le=0.5)
    preview_images: int = Field(ge=1)
    preview_variants: int = Field(ge=1)

    def training_keys(self) -> dict[str, float]:
        """The keys training reads (not the preview's), as recorded in a model's sidecar."""
        return {k: v for k, v in self.model_dump().items() if not k.startswith("preview_")}


class VisualizeParams(Section):
    rows: int = Field(ge=1)
    columns: int = Field(ge=1)


class PredictParams(Section):
    input: str
    batch_size: int = Field(ge=1, le=4096)
    max_pixels: int = Field(ge=1)

    @field_validator("input")
    @classmethod
    def _names_a_folder(cls, value: str) -> str:
        fail_unless(bool(value.strip()), "", "must name a folder")
        return value


# ----------------------------------------------------------------------------- models


class TrainParams(Section):
    architecture: str
    channels: list[int]
    weight_decay: float = Field(ge=0.0)
    augment: bool

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[int]) -> list[int]:
        fail_unless(len(value) >= 1 and all(c >= 1 for c in value), "", "must list at least one positive number of channels")
        return value


class FitSection(Section):
    """What the sections of the stages that fit a backbone share: their own fit settings."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    weight_decay: float = Field(ge=0.0)


class PretrainParams(FitSection):
    weights: Literal["pretext", "imagenet", "none"]
    lr: LearningRate
    augment: bool


class FinetuneParams(FitSection):
    architecture: str
    lr_backbone: LearningRate
    lr_head: LearningRate
    augment: bool


class TransferParams(FitSection):
    architecture: str
    lr: LearningRate


class TuneParams(Section):
    grid: dict[str, list[Any]]
    folds: int = Field(ge=2, le=20)
    subsample: int = Field(ge=0)
    channels: list[int]
    batch_size: int = Field(ge=1)
    scoring: str

    @model_validator(mode="after")
    def _shape(self) -> "TuneParams":
        fail_unless(len(self.grid) >= 1, "grid", "must name at least one parameter to search over")
        for key, values in self.grid.items():
            fail_unless(len(values) >= 1, f"grid.{key}", "must list at least one value")
            fail_unless(len({repr(v) for v in values}) == len(values), f"grid.{key}", f"lists a value twice: {values}")
        fail_unless(self.subsample == 0 or self.subsample >= 10 * self.folds, "subsample",
                    f"must be 0 (all images) or at least 10 per fold ({10 * self.folds}), got {self.subsample}")
        fail_unless(len(self.channels) >= 1 and all(c >= 1 for c in self.channels), "channels",
                    f"must list at least one positive channel count, got {self.channels}")
        return self

    def channel_options(self) -> list[list[int]]:
        """Every conv stack the search builds: tune.channels, or each grid value of module__channels."""
        return [list(v) for v in self.grid.get("module__channels", [self.channels]) if isinstance(v, list)]


class EvaluateParams(Section):
    resamples: int = Field(ge=100)


class SelectParams(Section):
    metric: Metric
    alpha: float = Field(gt=0.0, lt=1.0)


class ServedParams(Section):
    log_dir: str = Field(min_length=1)
    images: str = Field(min_length=1)


class MonitorParams(Section):
    alpha: float = Field(gt=0.0, lt=1.0)
    auc_threshold: float = Field(gt=0.5, lt=1.0)
    min_images: int = Field(ge=2)
    bucket: Literal["hour", "day"]


class PromoteParams(Section):
    """The promotion gate (python -m tracking.promote); read by no stage, and no part of a pipeline state."""

    metric: Metric
    margin: float = Field(ge=0.0, le=1.0)
    alpha: float = Field(gt=0.0, lt=1.0)


# ----------------------------------------------------------------------------- the document


class PipelineParams(Section):
    """The whole ``params.yaml``; top-level scalars are the knobs ``dvc exp run -S`` sweeps."""

    seed: int = Field(ge=0)
    model_seed: int = Field(ge=0)
    lr: LearningRate
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    numerics: Literal["native", "portable"]
    ingest: IngestParams
    preprocess: PreprocessParams
    impute: ImputeParams
    featurize: FeaturizeParams
    split: SplitParams
    synthesize: SynthesizeParams
    augment: AugmentParams
    visualize: VisualizeParams
    predict: PredictParams
    tune: TuneParams
    train: TrainParams
    pretrain: PretrainParams
    finetune: FinetuneParams
    transfer: TransferParams
    evaluate: EvaluateParams
    select: SelectParams
    served: ServedParams
    monitor: MonitorParams
    promote: PromoteParams

    @model_validator(mode="after")
    def _image_size_fits_the_seed_cnn(self) -> "PipelineParams":
        """The seed CNN pools once per conv block, so the image side must divide by 2**blocks."""
        size = self.featurize.image_size
        if self.train.architecture == "seed_cnn":
            blocks = len(self.train.channels)
            fail_unless(size % 2**blocks == 0, "featurize.image_size",
                        f"is {size}, which train.channels ({blocks} pooling blocks) needs divisible by {2**blocks}")
        for channels in self.tune.channel_options():
            fail_unless(size % 2 ** len(channels) == 0, "featurize.image_size",
                        f"is {size}, which tune's conv stack {channels} ({len(channels)} pooling blocks) needs "
                        f"divisible by {2 ** len(channels)}")
        return self
