"""The selected model as MLflow logged models: one per flavour, logged once, reused when equal.

:func:`log_models` logs the model folder the mirror sends as every flavour of :data:`FLAVOURS`
(the pt2 tensor model the registry version points at, and the image-bytes pyfunc of
:mod:`tracking.pyfunc`), or links a model already logged from the same files and code
(:func:`model_digest`) to the run instead of exporting it again. Called by
:func:`tracking.sink.send` inside ``tracking.store.global_store``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

from lifecycle.core import paths
from tracking.provenance import TAG_STATE

MODEL_NAME = "model"               # the logged model's name in its run
IMAGE_MODEL_NAME = "image-model"   # the same model as an image-bytes pyfunc (tracking/pyfunc.py)
MODEL_STEP = 0                     # the step a logged model is linked to: the step of every scalar metric
TAG_MODEL_DIGEST = "model.sha256"  # logged-model tag: model_digest() of the files it was logged from
# Part of model_digest: change it when the logged files change for the same model (signature,
# input example, requirements), so that no older logged model is reused for a newer format.
LOGGED_FORMAT = "pt2 signature input_example sidecar requirements v1"
EXAMPLE_IMAGES = 2        # > 1, so that torch.export keeps the batch dimension dynamic


def model_signature(image_size: int, classes: int) -> Any:
    """Input: normalised float32 images (-1, 3, S, S); output: float32 logits (-1, classes)."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, image_size, image_size))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes))]),
    )


def example_input(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """A fixed batch of uint8 images normalised as the model expects (float32 NCHW)."""
    import numpy as np

    from lifecycle.models import to_model_input

    images = np.random.default_rng(0).integers(0, 256, size=(EXAMPLE_IMAGES, image_size, image_size, 3), dtype=np.uint8)
    return to_model_input(images, mean, std).numpy()


def model_digest(folder: Path, code: tuple[Path, ...] = ()) -> str:
    """What a logged model is made of: the selected model's files, the versions that shape the
    logged files, :data:`LOGGED_FORMAT`, and the Python files under ``code`` that a flavour copies
    into the logged model. Equal digests mean interchangeable logged models."""
    digest = hashlib.sha256(LOGGED_FORMAT.encode())
    for package in ("torch", "numpy", "mlflow"):
        digest.update(f"\0{package}=={metadata.version(package)}".encode())
    for name in sorted(path.name for path in Path(folder).iterdir() if path.is_file()):
        digest.update(f"\0{name}\0".encode() + (Path(folder) / name).read_bytes())
    for root in code:
        for path in sorted(Path(root).rglob("*.py")):
            digest.update(f"\0{path.relative_to(root).as_posix()}\0".encode() + path.read_bytes())
    return digest.hexdigest()


def log_models(client: Any, experiment_id: str, run_id: str, folder: Path, tags: Mapping[str, str]) -> str:
    """Log the selected model in ``folder`` once per run, as every flavour of :data:`FLAVOURS`;
    returns the id of the one the registry version points at (``MODEL_NAME``).

    A flavour already logged from the same files (same :func:`model_digest`, in this experiment)
    is linked to the run instead of logged again: a sweep whose experiments keep the same
    selected model, or a state mirrored again after a params-only change, then skips the
    export, which is most of the mirror's time (see benchmarks/mirror_speed.py).
    """
    from mlflow.entities import LoggedModelOutput

    logged = _run_models(client, run_id)
    for name, flavour in FLAVOURS.items():
        if name in logged:
            continue
        digest = model_digest(folder, flavour.code)
        same = client.search_logged_models(
            [experiment_id], filter_string=f"name = '{name}' AND tags.`{TAG_MODEL_DIGEST}` = '{digest}'",
            order_by=[{"field_name": "creation_timestamp", "ascending": True}],
        )
        ready = [model.model_id for model in same if _ready(model)]
        if ready:
            client.log_outputs(run_id, [LoggedModelOutput(ready[0], step=MODEL_STEP)])
            logged[name] = ready[0]
        else:
            logged[name] = flavour.log(run_id, folder, {TAG_STATE: tags[TAG_STATE], TAG_MODEL_DIGEST: digest})
    return logged[MODEL_NAME]


def _ready(model: Any) -> bool:
    return str(model.status).upper().endswith("READY")


def _run_models(client: Any, run_id: str) -> dict[str, str]:
    """Flavour name -> model id of the ready models the run logged or links to."""
    outputs = client.get_run(run_id).outputs
    found = {}
    for output in (outputs.model_outputs if outputs else None) or []:
        model = client.get_logged_model(output.model_id)
        if _ready(model):
            found.setdefault(model.name, model.model_id)
    return found


def _log_pytorch_model(run_id: str, folder: Path, tags: Mapping[str, str]) -> str:
    """The pt2 (torch.export) flavour: a graph and weights, nothing unpickled on load; the sidecar
    as ``extra_files/model.json``; input normalised images, output logits (:func:`model_signature`)."""
    import mlflow
    import mlflow.pytorch
    import torch

    from lifecycle.models import SIDECAR_FILE, load_model

    model, spec = load_model(folder)
    with torch.no_grad(), mlflow.start_run(run_id=run_id):
        return mlflow.pytorch.log_model(
            model,
            name=MODEL_NAME,
            signature=model_signature(spec.image_size, len(spec.classes)),
            input_example=example_input(spec.image_size, spec.mean, spec.std),
            extra_files=[str(folder / SIDECAR_FILE)],
            pip_requirements=[f"torch=={metadata.version('torch')}", f"numpy=={metadata.version('numpy')}"],
            serialization_format="pt2",
            step=MODEL_STEP,
            tags=dict(tags),
        ).model_id


def _log_image_model(run_id: str, folder: Path, tags: Mapping[str, str]) -> str:
    """The image-bytes pyfunc (:mod:`tracking.pyfunc`): the service's input, answer and code."""
    import mlflow

    from tracking.pyfunc import model_arguments

    with mlflow.start_run(run_id=run_id):
        return mlflow.pyfunc.log_model(name=IMAGE_MODEL_NAME, tags=dict(tags), step=MODEL_STEP,
                                       **model_arguments(folder)).model_id


class Flavour(NamedTuple):
    """How the selected model is logged once more: ``log(run_id, model folder, tags)`` logs it and
    returns its model id; ``code`` are the folders of Python it copies into the logged model (part
    of its :func:`model_digest`, so a code change logs it anew)."""

    log: Callable[[str, Path, Mapping[str, str]], str]
    code: tuple[Path, ...] = ()


# The flavours each selected model is logged as, by name in its run. The registry version points
# at MODEL_NAME's; add a flavour here and it is logged, reused and linked like the first.
FLAVOURS: dict[str, Flavour] = {
    MODEL_NAME: Flavour(_log_pytorch_model),
    IMAGE_MODEL_NAME: Flavour(_log_image_model, code=(paths.ROOT / "lifecycle",)),
}
