"""The selected model as an image-bytes MLflow pyfunc, beside the pt2 tensor model: its arguments.

in: a model folder (``models/best``: ``model.pt`` + ``model.json``).  out: the arguments of
``mlflow.pyfunc.log_model`` (:mod:`tracking.flavours` logs it as ``image-model`` in the run,
``runs:/<run id>/image-model`` or ``models:/<model id>``), whose input is raw image bytes and
whose output is the service's answer (:mod:`tracking.image_model`).

Why: ``mlflow models serve`` of the pt2 model takes an already preprocessed float tensor, so a
client must decode, resize and normalise images itself, and a comparison with the /predict
service (which receives the JPEG) is not like for like. This model takes the same bytes the
service takes and runs the same code on them (``lifecycle.inference.Predictor``).

How: MLflow "models from code": ``python_model`` is the path of tracking/image_model.py, the
model folder is the artifact ``model``, and the ``lifecycle`` package is ``code_paths`` (copied
into the logged model, so the model keeps the code it was logged with and serves outside this
repository). Requirements are pinned from the running environment; MLflow infers nothing.
"""
from __future__ import annotations

import io
from importlib import metadata
from pathlib import Path
from typing import Any

import lifecycle
from tracking import image_model

# What importing lifecycle.inference needs, plus torchvision for torchvision architectures.
REQUIREMENTS = ("torch", "torchvision", "numpy", "pandas", "pillow", "tqdm")


def example_jpeg(side: int = 48) -> bytes:
    """A fixed small JPEG (seeded noise): the logged input example, and MLflow's check that the model runs."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def signature(classes: list[str]) -> Any:
    """Input: one binary column ``image``; output: prediction, label, probability_<class>..."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, DataType, Schema

    outputs = [ColSpec(DataType.long, "prediction"), ColSpec(DataType.string, "label")]
    outputs += [ColSpec(DataType.double, f"probability_{name}") for name in classes]
    return ModelSignature(inputs=Schema([ColSpec(DataType.binary, image_model.IMAGE_COLUMN)]),
                          outputs=Schema(outputs))


def model_arguments(folder: Path) -> dict[str, Any]:
    """The arguments of ``mlflow.pyfunc.log_model`` (and ``save_model``) for ``folder``."""
    import pandas as pd

    from lifecycle.models import load_spec

    spec = load_spec(Path(folder))
    return {
        "python_model": image_model.__file__,
        "artifacts": {image_model.MODEL_ARTIFACT: str(Path(folder).resolve())},
        "code_paths": [str(Path(lifecycle.__file__).parent)],
        "signature": signature(list(spec.classes)),
        "input_example": pd.DataFrame({image_model.IMAGE_COLUMN: [example_jpeg()]}),
        "pip_requirements": [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS],
    }
