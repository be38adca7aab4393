"""The selected model as an MLflow pyfunc that takes image bytes, as the /predict service does.

This file is MLflow "models from code": :mod:`tracking.pyfunc` logs it (``python_model`` = this
file's path) with the model folder (``model.pt`` + ``model.json``) as the artifact ``model`` and
the ``lifecycle`` package as code, so the logged model runs the project's own inference path:
:meth:`lifecycle.inference.Predictor.preprocess` (the decoding ``featurize`` used for training)
then :meth:`~lifecycle.inference.Predictor.predict` (the forward path ``evaluate`` scored). Nothing
is pickled: loading it runs this file and reads a ``state_dict`` with ``weights_only=True``.

in: a DataFrame with one column ``image`` of raw image bytes (JPEG, PNG, ...), one row per
    image; over HTTP (``mlflow models serve``) the bytes travel base64-encoded:
    ``{"dataframe_split": {"columns": ["image"], "data": [["<base64>"], ...]}}``.
out: one row per image: ``prediction`` (class index), ``label``, ``probability_<class>`` for each
    class (the columns of data/predictions/predictions.csv).
"""
from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from lifecycle.core.images import ImageDecodeError
from lifecycle.inference import Predictor, load_predictor

IMAGE_COLUMN = "image"
MODEL_ARTIFACT = "model"  # the artifact key of the model folder


def answer_columns(classes: list[str]) -> list[str]:
    """The output's columns, in order, for a model with these classes."""
    return ["prediction", "label"] + [f"probability_{name}" for name in classes]


def answer_frame(predictor: Predictor, images: list[bytes]) -> pd.DataFrame:
    """Image bytes in, one answer row per image out, through the service's own code path."""
    arrays = []
    for index, data in enumerate(images):
        try:
            arrays.append(predictor.preprocess(bytes(data)))
        except ImageDecodeError as error:  # the client's mistake: MLflow answers it with a 400
            raise MlflowException(f"image {index} is not a readable image: {error}.",
                                  error_code=INVALID_PARAMETER_VALUE) from None
    probabilities = predictor.predict(np.stack(arrays))
    indices = probabilities.argmax(axis=1)
    frame = pd.DataFrame({"prediction": indices.astype(np.int64),
                          "label": [predictor.classes[i] for i in indices]})
    for column, name in enumerate(predictor.classes):
        frame[f"probability_{name}"] = probabilities[:, column]
    return frame


class ImageClassifier(PythonModel):
    """Loads the model folder once per process; answers DataFrames of image bytes."""

    def load_context(self, context: Any) -> None:
        self.predictor = load_predictor(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if IMAGE_COLUMN not in model_input:
            raise MlflowException(f"the input needs a column '{IMAGE_COLUMN}' of image bytes.",
                                  error_code=INVALID_PARAMETER_VALUE)
        if len(model_input) == 0:
            return pd.DataFrame(columns=answer_columns(self.predictor.classes))
        return answer_frame(self.predictor, list(model_input[IMAGE_COLUMN]))


# MLflow runs this file under another module name to load the logged model; importing it as
# tracking.image_model (the mirror, tests) only defines the class.
if __name__ != "tracking.image_model":
    mlflow.models.set_model(ImageClassifier())
