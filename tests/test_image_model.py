"""The image-bytes pyfunc the mirror logs (tracking/pyfunc.py, tracking/image_model.py) answers
exactly as the /predict service does for the same image bytes: loaded back from the tracking
store through MLflow's own loader, and (slow) served by ``mlflow models serve`` over HTTP from
a folder outside the repository, so it runs on the code it was logged with."""
from __future__ import annotations

import base64
import io
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from PIL import Image

from lifecycle.inference import load_predictor
from serving import create_app
from tracking import flavours, image_model, mirror
from tracking.store import EXPERIMENT, global_store

from .conftest import ROOT, env_with_venv
from .servers import free_port, stop_process_group, wait_until_up
from .test_tracking import (  # noqa: F401  (fixtures)
    MLFLOW,
    SERVE_START_S,
    client_for,
    empty_store,
    runs_of,
    workspace,
)


def encoded(image: Image.Image, kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **options)
    return buffer.getvalue()


def sample_uploads() -> list[bytes]:
    """Uploads a user sends: JPEGs of several sizes, an EXIF-rotated JPEG, grayscale, palette and RGBA PNGs."""
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 256, size=(90, 140, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    return [
        encoded(photo, "JPEG", quality=85),
        encoded(photo.resize((33, 47)), "JPEG"),
        encoded(photo, "JPEG", exif=exif.tobytes()),
        encoded(photo.convert("L"), "PNG"),
        encoded(photo.convert("P"), "PNG"),
        encoded(photo.convert("RGBA"), "PNG"),
    ]


def service_probabilities(model_dir: Path, uploads: list[bytes]) -> np.ndarray:
    """What POST /predict answers for the uploads, in one request, as an array (N, classes)."""
    client = create_app({"SERVE_MODEL": str(model_dir)}).test_client()
    files = [(io.BytesIO(data), f"{i}.img") for i, data in enumerate(uploads)]
    answer = client.post("/predict", data={"image": files}, content_type="multipart/form-data")
    assert answer.status_code == 200, answer.json
    return np.array([list(p["probabilities"].values()) for p in answer.json["predictions"]])


def logged_image_model(store: Path) -> tuple[str, str]:
    """(run id, models:/<model id>) of the image model the mirror logged into ``store``."""
    client = client_for(f"sqlite:///{store}")
    [run] = runs_of(client)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    models = {m.name: m for m in client.search_logged_models([experiment])}
    assert set(models) == {flavours.MODEL_NAME, flavours.IMAGE_MODEL_NAME}
    assert models[flavours.IMAGE_MODEL_NAME].source_run_id == run.info.run_id
    return run.info.run_id, f"models:/{models[flavours.IMAGE_MODEL_NAME].model_id}"


def test_the_logged_image_model_answers_like_the_service_for_the_same_bytes(workspace: Path, tmp_path: Path):
    import mlflow

    report = mirror.mirror_workspace(workspace, environ={})
    assert report.kept == [], report.warning()
    uri = f"sqlite:///{workspace}/mlflow.db"
    run_id, model_uri = logged_image_model(workspace / "mlflow.db")
    with global_store(uri):
        local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{flavours.IMAGE_MODEL_NAME}",
                                                         dst_path=str(tmp_path / "download")))
        model = mlflow.pyfunc.load_model(model_uri)

    meta = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert meta["loader_module"] == "mlflow.pyfunc.loaders.code_model"       # models from code: nothing unpickled
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.pickle"))
    for path in (ROOT / "lifecycle").rglob("*.py"):                          # the code it was logged with
        assert (local / "code" / path.relative_to(ROOT)).read_bytes() == path.read_bytes(), path
    assert (local / "artifacts" / "best" / "model.pt").read_bytes() == (workspace / "models/best/model.pt").read_bytes()

    uploads = sample_uploads()
    answer = model.predict(pd.DataFrame({image_model.IMAGE_COLUMN: uploads}))
    assert list(answer.columns) == ["prediction", "label", "probability_cat", "probability_dog"]
    probabilities = answer[["probability_cat", "probability_dog"]].to_numpy()

    predictor = load_predictor(workspace / "models/best")                  # the service's own code path, exactly
    expected = predictor.predict(np.stack([predictor.preprocess(data) for data in uploads]))
    np.testing.assert_array_equal(probabilities, expected)
    np.testing.assert_allclose(probabilities, service_probabilities(workspace / "models/best", uploads),
                               rtol=0, atol=5e-7)                          # the service rounds to 6 decimals
    assert list(answer["prediction"]) == list(expected.argmax(axis=1))
    assert list(answer["label"]) == [predictor.classes[i] for i in expected.argmax(axis=1)]

    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="image 1 is not a readable image"):
        model.predict(pd.DataFrame({image_model.IMAGE_COLUMN: [uploads[0], b"GIF89a not really"]}))


def test_mirroring_the_same_state_again_logs_the_image_model_once(workspace: Path):
    mirror.mirror_workspace(workspace, environ={})
    mirror.mirror_workspace(workspace, environ={"DVC_EXP_NAME": "again"})
    client = client_for(f"sqlite:///{workspace}/mlflow.db")
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    names = sorted(m.name for m in client.search_logged_models([experiment]))
    assert names == sorted([flavours.MODEL_NAME, flavours.IMAGE_MODEL_NAME])


@pytest.mark.slow
def test_mlflow_models_serve_answers_jpeg_bytes_like_the_service(workspace: Path, tmp_path: Path):
    report = mirror.mirror_workspace(workspace, environ={})
    assert report.kept == [], report.warning()
    _, model_uri = logged_image_model(workspace / "mlflow.db")
    outside = tmp_path / "elsewhere"                                        # not the repository: the model's own code
    outside.mkdir()
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**env_with_venv(), "MLFLOW_TRACKING_URI": f"sqlite:///{workspace}/mlflow.db", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    command = [MLFLOW, "models", "serve", "-m", model_uri, "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, cwd=outside, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/ping", SERVE_START_S, log)
        uploads = sample_uploads()
        body = {"dataframe_split": {"columns": [image_model.IMAGE_COLUMN],
                                    "data": [[base64.b64encode(data).decode()] for data in uploads]}}
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        rows = answer.json()["predictions"]
        probabilities = np.array([[row["probability_cat"], row["probability_dog"]] for row in rows])
        predictor = load_predictor(workspace / "models/best")
        expected = predictor.predict(np.stack([predictor.preprocess(data) for data in uploads]))
        np.testing.assert_array_equal(probabilities, expected)
        np.testing.assert_allclose(probabilities, service_probabilities(workspace / "models/best", uploads),
                                   rtol=0, atol=5e-7)

        bad = {"dataframe_split": {"columns": [image_model.IMAGE_COLUMN],
                                   "data": [[base64.b64encode(b"not an image").decode()]]}}
        refused = requests.post(f"http://127.0.0.1:{port}/invocations", json=bad, timeout=60)
        assert refused.status_code == 400 and "not a readable image" in refused.text, refused.text
    finally:
        stop_process_group(process)
