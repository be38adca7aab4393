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
``true`` is not an integer), and an int is accepted where a float is expected. The defaults
here are the library's; ``params.yaml`` sets what the pipeline runs with.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# MLflow-free, torch-free: the image decoding limit is a plain number.
DEFAULT_MAX_PIXELS = 64_000_000


class ParamError(ValueError):
    """Raised by a validator to blame ``field`` (relative to the model it validates)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"@{field}@{message}")


def fail_unless(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ParamError(field, message)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)



# ----------------------------------------------------------------------------- data


class SyntheticParams(Section):
    count: int = Field(2000, ge=10)                     # images drawn (before duplicates and defects are added)
    cat_fraction: float = Field(0.7, gt=0.0, lt=1.0)     # class imbalance the synthesize stage corrects
    min_size: int = Field(48, ge=16)                     # smallest side of a saved image, pixels
    max_size: int = 160                                  # largest side of a saved image, pixels
    separation: float = Field(1.0, gt=0.0)               # scales how far apart the class cues are: lower is harder
    duplicate_rows: float = Field(0.03, ge=0.0, le=0.5)  # fraction of rows repeated verbatim
    duplicate_images: float = Field(0.02, ge=0.0, le=0.5)  # fraction of images saved again under a second path
    missing_labels: float = Field(0.03, ge=0.0, le=0.5)  # fraction of rows whose label is blank
    stray_whitespace: float = Field(0.1, ge=0.0, le=0.5)  # fraction of paths padded with spaces
    missing_files: float = Field(0.01, ge=0.0, le=0.5)   # fraction of rows pointing at a file that does not exist
    truncated_files: float = Field(0.01, ge=0.0, le=0.5)  # fraction of files cut short
    corrupt_files: float = Field(0.01, ge=0.0, le=0.5)   # fraction of files overwritten with bytes that are no image
    grayscale: float = Field(0.05, ge=0.0, le=0.5)       # fraction saved as 8-bit grayscale
    rgba: float = Field(0.05, ge=0.0, le=0.5)            # fraction saved as RGBA PNG
    palette: float = Field(0.05, ge=0.0, le=0.5)         # fraction saved as palette PNG

    @model_validator(mode="after")
    def _sizes(self) -> "SyntheticParams":
        fail_unless(self.max_size >= self.min_size, "max_size", f"must be at least min_size ({self.min_size}), got {self.max_size}")
        return self


class IngestParams(Section):
    source: Literal["synthetic", "kaggle", "imagefolder", "csv"] = "synthetic"
    path: str = "data/external"      # the folder holding your images (and, for csv, the manifest); a dvc.yaml dep
    manifest: str = "manifest.csv"   # csv source: the manifest file, inside path
    path_column: str = "image_path"  # csv source: the column holding image paths (relative to path, or absolute)
    label_column: str = "label"      # csv source: the column holding labels
    synthetic: SyntheticParams = SyntheticParams()

    @field_validator("path", "manifest")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        fail_unless(bool(value.strip()), "", "must name a file or folder")
        return value


class PreprocessParams(Section):
    drop_columns: list[str] = ["Unnecessary_Column"]  # irrelevant columns; absent ones are reported, not fatal
    classes: list[str] = ["cat", "dog"]               # labels kept after lower-casing and stripping
    label_aliases: dict[str, str] = {}                # other spellings mapped onto a class

    @model_validator(mode="after")
    def _classes(self) -> "PreprocessParams":
        fail_unless(len(set(self.classes)) >= 2, "classes", "must name at least two distinct classes")
        for alias, target in self.label_aliases.items():
            fail_unless(target in self.classes, f"label_aliases.{alias}", f"maps to '{target}', which is not in classes")
        return self


class ImputeParams(Section):
    label_strategy: Literal["most_frequent", "drop"] = "drop"


class FeaturizeParams(Section):
    image_size: int = Field(64, ge=16, le=512)  # side of the square every image is resized to, pixels


class SplitParams(Section):
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)   # for model selection and early stopping
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)  # touched only by evaluate

    @model_validator(mode="after")
    def _room_for_training(self) -> "SplitParams":
        fail_unless(self.val_fraction + self.test_fraction < 0.8, "test_fraction",
                    "plus val_fraction must leave at least 20% for training")
        return self


class SynthesizeParams(Section):
    method: Literal["smote", "random_over", "none"] = "smote"
    k_neighbors: int = Field(5, ge=1)  # SMOTE: minority neighbours to interpolate towards


class AugmentParams(Section):
    hflip: float = Field(0.5, ge=0.0, le=1.0)        # probability of a horizontal flip
    rotation: float = Field(10.0, ge=0.0, le=180.0)  # maximum rotation in degrees, either way
    crop_scale: float = Field(0.8, ge=0.05, le=1.0)  # RandomResizedCrop keeps at least this fraction of the area
    brightness: float = Field(0.2, ge=0.0, le=1.0)   # ColorJitter strengths; 0 disables each
    contrast: float = Field(0.2, ge=0.0, le=1.0)
    saturation: float = Field(0.2, ge=0.0, le=1.0)
    hue: float = Field(0.02, ge=0.0, le=0.5)
    preview_images: int = Field(6, ge=1)              # rows in plots/augment_preview.png
    preview_variants: int = Field(7, ge=1)            # augmented copies shown per row

    def training_keys(self) -> dict[str, float]:
        """The keys training reads (not the preview's), as recorded in a model's sidecar."""
        return {k: v for k, v in self.model_dump().items() if not k.startswith("preview_")}


class VisualizeParams(Section):
    rows: int = Field(4, ge=1)      # grid rows
    columns: int = Field(8, ge=1)   # grid columns


class PredictParams(Section):
    input: str = "data/raw/images"       # folder to classify, every file under it; relative to the repo or absolute
    batch_size: int = Field(64, ge=1, le=4096)  # images per forward pass
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)  # images with more pixels are skipped before decoding

    @field_validator("input")
    @classmethod
    def _names_a_folder(cls, value: str) -> str:
        fail_unless(bool(value.strip()), "", "must name a folder")
        return value


# ----------------------------------------------------------------------------- models


def _learning_rate(default: float) -> Any:
    return Field(default, gt=0.0, lt=10.0)


class TrainParams(Section):
    architecture: str = "seed_cnn"        # seed_cnn, or any torchvision.models classifier (from scratch)
    channels: list[int] = [16, 32, 64]    # seed_cnn's conv blocks; [32] is the seed's single block
    weight_decay: float = Field(0.0, ge=0.0)  # Adam's L2 penalty
    augment: bool = True                  # apply augment.* on the fly

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[int]) -> list[int]:
        fail_unless(len(value) >= 1 and all(c >= 1 for c in value), "", "must list at least one positive number of channels")
        return value


class PretrainParams(Section):
    weights: Literal["pretext", "imagenet", "none"] = "pretext"  # where the backbone's weights come from
    epochs: int = Field(2, ge=1)
    lr: float = _learning_rate(0.001)
    batch_size: int = Field(32, ge=1)
    weight_decay: float = Field(0.0, ge=0.0)
    augment: bool = True                  # augment.* before the rotation


class FinetuneParams(Section):
    architecture: str = "resnet18"        # any torchvision.models classifier
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(32, ge=1)
    lr_backbone: float = _learning_rate(0.0001)  # every pretrained layer
    lr_head: float = _learning_rate(0.001)       # the new two-class layer
    weight_decay: float = Field(0.0, ge=0.0)
    augment: bool = True


class TransferParams(Section):
    architecture: str = "resnet18"
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = _learning_rate(0.001)
    weight_decay: float = Field(0.0, ge=0.0)


class TuneParams(Section):
    grid: dict[str, list[Any]] = {"lr": [0.01, 0.001], "max_epochs": [10, 20]}  # the seed's grid
    folds: int = Field(2, ge=2, le=20)    # stratified cross-validation folds
    subsample: int = Field(600, ge=0)     # training images searched over (a stratified draw); 0: all
    channels: list[int] = [8]             # SeedCNN conv blocks while tuning (module__channels may vary it)
    batch_size: int = Field(64, ge=1)     # unless the grid varies batch_size
    scoring: str = "accuracy"             # a scikit-learn scorer name

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
    resamples: int = Field(1000, ge=100)   # bootstrap resamples behind each metric's 95% interval (seeded by `seed`)


class SelectParams(Section):
    metric: Literal["accuracy", "precision", "recall", "f1", "roc_auc"] = "accuracy"  # on the validation split
    alpha: float = Field(0.05, gt=0.0, lt=1.0)  # significance level of the paired test against the runner-up


class PromoteParams(Section):
    """The promotion gate (python -m tracking.promote); read by no stage, and no part of a pipeline state."""

    metric: Literal["accuracy", "precision", "recall", "f1", "roc_auc"] = "accuracy"  # re-scored on the validation split
    margin: float = Field(0.005, ge=0.0, le=1.0)  # the candidate must beat the champion by at least this much
    alpha: float = Field(0.05, gt=0.0, lt=1.0)    # ... and be right on significantly more images (paired test) at this level


# ----------------------------------------------------------------------------- the document


class PipelineParams(Section):
    """The whole ``params.yaml``; top-level scalars are the knobs ``dvc exp run -S`` sweeps."""

    seed: int = Field(42, ge=0)           # the data's random draws: synthetic images, splits, SMOTE, tune, bootstrap
    model_seed: int = Field(42, ge=0)     # the models': initial weights and batch order (pretrain, train, finetune, transfer)
    lr: float = _learning_rate(0.001)     # train: Adam's learning rate
    epochs: int = Field(15, ge=1)         # train: passes over the training split
    batch_size: int = Field(32, ge=1)     # train: images per optimisation step, over all processes
    # CPU numerics (lifecycle/core/numerics.py; applied when the lifecycle package loads, before torch):
    # native, the libraries' fastest kernels for this CPU; portable, the same bytes on any AVX2 x86-64 CPU
    numerics: Literal["native", "portable"] = "native"
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
