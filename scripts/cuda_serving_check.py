"""Check that an MLflow (pt2) model and its inputs land on the same device when served, on a machine with a GPU.

Saves an untrained seed CNN the way the MLflow mirror logs the selected model
(``mlflow.pytorch.save_model(..., serialization_format="pt2")``, exported on CPU, the sidecar
as an extra file), loads it with :func:`tracking.mlflow_model.load_model_source` on every device
this machine has (CPU, and ``cuda:0`` when CUDA is available), and reports for each: the
devices its weights, constants and graph use, and the largest difference of its
probabilities from the eager CPU model on the same images. Prints one JSON line; exits 1 if
a model did not land whole on its device or answered differently.

usage: python scripts/cuda_serving_check.py
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lifecycle.inference import tensor_devices  # noqa: E402
from lifecycle.models import ModelSpec, SeedCNN, class_probabilities, load_model, save_model, to_model_input  # noqa: E402
from tracking.mlflow_model import load_model_source  # noqa: E402

SIZE = 32


def mirrored_model(folder: Path) -> Path:
    """models/best-style folder, then the MLflow pt2 model the mirror would log from it."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    torch.manual_seed(0)
    spec = ModelSpec(architecture="seed_cnn", classes=["cat", "dog"], image_size=SIZE, arguments={"channels": [8]},
                     info={"stage": "check"})
    save_model(SeedCNN(image_size=SIZE, channels=(8,)), spec, folder / "best")
    model, _ = load_model(folder / "best")
    example = to_model_input(np.zeros((2, SIZE, SIZE, 3), dtype=np.uint8)).numpy()
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    mlflow.pytorch.save_model(model, str(folder / "mlflow-model"), signature=signature, input_example=example,
                              extra_files=[str(folder / "best" / "model.json")], serialization_format="pt2")
    return folder / "mlflow-model"


def main() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(8, SIZE, SIZE, 3), dtype=np.uint8)
    devices = [torch.device("cpu")] + ([torch.device("cuda:0")] if torch.cuda.is_available() else [])
    report: dict = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "devices": {}}
    ok = True
    with tempfile.TemporaryDirectory() as scratch:
        local = mirrored_model(Path(scratch))
        eager, spec = load_model(Path(scratch) / "best")
        expected = class_probabilities(eager, images, spec)
        for device in devices:
            predictor = load_model_source(str(local), device=device)
            used = sorted(map(str, tensor_devices(predictor.model)))
            difference = float(np.abs(predictor.predict(images) - expected).max())
            whole = used == [str(device)]
            ok &= whole and difference < 1e-4
            report["devices"][str(device)] = {"model_uses": used, "max_probability_difference": difference}
    report["ok"] = ok
    print(json.dumps(report))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
