"""The /predict service: answers, preprocessing parity with training, bad input, gunicorn, the page."""
from __future__ import annotations

import base64
import io
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image, ImageFile

from lifecycle.core.errors import UserError
from lifecycle.core.images import DEFAULT_MAX_PIXELS, load_array
from lifecycle.models import ModelSpec, SeedCNN, load_model, save_model, to_model_input
from serving import create_app
from tests.servers import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog"]
METRICS = {"val": {"accuracy": 0.8125, "f1": 0.79}, "test": {"accuracy": 0.8, "f1": 0.78}}  # as select writes them


def make_model(folder: Path, seed: int = 0, **spec_overrides) -> Path:
    """The brief's tiny model (SeedCNN 32 px, one conv block of 8 channels), saved as models/best is."""
    torch.manual_seed(seed)
    spec = ModelSpec(architecture="seed_cnn", classes=CLASSES, image_size=32, arguments={"channels": [8]},
                     info={"stage": "train", "source": "train", **METRICS}, **spec_overrides)
    save_model(SeedCNN(image_size=32, channels=(8,)), spec, folder)
    return folder


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def picture(seed: int = 0, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """An asymmetric random RGB picture: rotating or flipping it changes the pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    pixels[: size[1] // 3, : size[0] // 4] = (250, 20, 20)
    return Image.fromarray(pixels)


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but whose data is a few bytes: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + chunk(b"IEND", b""))


def offline_probabilities(model_dir: Path, data: bytes) -> np.ndarray:
    """What the training pipeline would compute: featurize's load_array, then to_model_input, then softmax."""
    model, spec = load_model(model_dir)
    batch = to_model_input(load_array(data, spec.image_size)[None], spec.mean, spec.std)
    with torch.no_grad():
        return torch.softmax(model(batch), dim=1)[0].numpy()


def upload(*files: tuple[bytes, str], field: str = "image") -> dict:
    return {field: [(io.BytesIO(data), name) for data, name in files]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("serve") / "models" / "best")


LIMITS = {"SERVE_MAX_IMAGES": 4, "MAX_CONTENT_LENGTH": 256 * 1024, "SERVE_MAX_PIXELS": 1_000_000}


@pytest.fixture(scope="module")
def app(model_dir):
    return create_app({"SERVE_MODEL": str(model_dir), **LIMITS})


@pytest.fixture
def client(app):
    return app.test_client()


def assert_still_up(client) -> None:
    response = client.get("/health")
    assert response.status_code == 200 and response.json["status"] == "ok"


# --- answers --------------------------------------------------------------------------------------

def test_health_names_the_model(client, model_dir):
    body = client.get("/health").json
    assert body["status"] == "ok"
    assert body["model"]["name"] == "train"
    assert body["model"]["version"].startswith("sha256:")


def test_every_answer_names_the_model_in_its_headers(client):
    version = client.get("/health").json["model"]["version"]
    for response in (client.get("/metadata"), client.get("/nothing-here"),
                     client.post("/predict", data=upload((b"text", "notes.txt"))),
                     client.post("/predict", data=upload((encode(picture(1)), "pet.png")))):
        assert response.headers["X-Model-Name"] == "train"
        assert response.headers["X-Model-Version"] == version


def test_health_says_where_the_model_comes_from_and_why(client, model_dir):
    body = client.get("/health").json
    assert Path(body["model"]["source"]).resolve() == model_dir.resolve()
    assert body["source_reason"] == "SERVE_MODEL names it."
    assert client.get("/metadata").json["source_reason"] == "SERVE_MODEL names it."


def test_metadata_reports_classes_size_metrics_and_limits(client):
    body = client.get("/metadata").json
    assert body["classes"] == CLASSES
    assert body["image_size"] == 32
    assert body["architecture"] == "seed_cnn"
    assert body["metrics"] == METRICS
    assert body["model"]["stage"] == "train"
    assert body["limits"] == {"max_upload_bytes": 256 * 1024, "max_images": 4, "max_pixels": 1_000_000}


def test_predict_answers_the_seed_shape_through_the_training_path(client, model_dir):
    data = encode(picture(1), "JPEG")
    response = client.post("/predict", data=upload((data, "pet.jpg")))
    assert response.status_code == 200, response.json
    body = response.json
    assert set(body) == {"prediction", "label", "probabilities", "request_id", "model"}
    expected = offline_probabilities(model_dir, data)
    assert list(body["probabilities"]) == CLASSES
    np.testing.assert_allclose([body["probabilities"][c] for c in CLASSES], expected, atol=2e-6)
    assert body["prediction"] == int(np.argmax(expected))
    assert body["label"] == CLASSES[body["prediction"]]
    assert body["model"]["name"] == "train"


def test_predict_normalises_with_the_sidecar_mean_and_std(tmp_path):
    data = encode(picture(2))
    imagenet = make_model(tmp_path / "imagenet")
    plain = make_model(tmp_path / "plain", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    answers = {}
    for folder in (imagenet, plain):
        body = create_app({"SERVE_MODEL": str(folder)}).test_client().post("/predict", data=upload((data, "a.png"))).json
        answers[folder.name] = [body["probabilities"][c] for c in CLASSES]
        np.testing.assert_allclose(answers[folder.name], offline_probabilities(folder, data), atol=2e-6)
    assert not np.allclose(answers["imagenet"], answers["plain"], atol=1e-4)


def test_several_images_are_answered_as_one_batch_in_order(client):
    files = [(encode(picture(seed)), f"pet{seed}.png") for seed in range(3)]
    response = client.post("/predict", data=upload(*files))
    assert response.status_code == 200, response.json
    body = response.json
    assert set(body) == {"request_id", "predictions", "model"}
    assert [p["filename"] for p in body["predictions"]] == ["pet0.png", "pet1.png", "pet2.png"]
    for (data, name), answer in zip(files, body["predictions"]):
        single = client.post("/predict", data=upload((data, name))).json
        assert {k: answer[k] for k in ("prediction", "label")} == {k: single[k] for k in ("prediction", "label")}
        np.testing.assert_allclose(list(answer["probabilities"].values()), list(single["probabilities"].values()),
                                   atol=2e-6)


MODES = {
    "grayscale": lambda: encode(picture(3).convert("L"), "JPEG"),
    "grayscale_alpha": lambda: encode(picture(3).convert("LA")),
    "rgba": lambda: encode(picture(3).convert("RGBA")),
    "palette": lambda: encode(picture(3).convert("P")),
    "palette_transparency": lambda: encode(picture(3).convert("P"), transparency=0),
    "cmyk": lambda: encode(picture(3).convert("CMYK"), "JPEG"),
    "sixteen_bit": lambda: encode(Image.fromarray((np.arange(48 * 40).reshape(40, 48) * 30).astype(np.uint16))),
    "bilevel": lambda: encode(picture(3).convert("1")),
    "webp": lambda: encode(picture(3), "WEBP"),
    "tiff": lambda: encode(picture(3), "TIFF"),
    "bmp": lambda: encode(picture(3), "BMP"),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_image_mode_is_answered_as_training_would_see_it(client, model_dir, mode):
    data = MODES[mode]()
    response = client.post("/predict", data=upload((data, f"{mode}.img")))
    assert response.status_code == 200, response.json
    np.testing.assert_allclose(list(response.json["probabilities"].values()), offline_probabilities(model_dir, data),
                               atol=2e-6)


def test_exif_orientation_is_applied(client):
    image = picture(4)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    tagged = client.post("/predict", data=upload((encode(image, exif=exif), "tagged.png"))).json
    upright = client.post("/predict", data=upload((encode(image.transpose(Image.Transpose.ROTATE_270)), "upright.png"))).json
    untagged = client.post("/predict", data=upload((encode(image), "raw.png"))).json
    assert tagged["probabilities"] == upright["probabilities"]
    assert tagged["probabilities"] != untagged["probabilities"]


def test_an_animation_is_answered_for_its_first_frame(client):
    first, second = picture(5).convert("P"), picture(6).convert("P")
    animated = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    answers = {name: client.post("/predict", data=upload((data, f"{name}.gif"))).json["probabilities"]
               for name, data in [("animated", animated), ("first", encode(first, "GIF")),
                                  ("second", encode(second, "GIF"))]}
    assert answers["animated"] == answers["first"]
    assert answers["animated"] != answers["second"]


# --- bad input: a 4xx with a JSON error, and the service stays up --------------------------------

def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat.jpg", encode(picture(7), "JPEG"))
    return buffer.getvalue()


def _garbled_png() -> bytes:
    data = bytearray(encode(picture(8)))
    data[100:400] = np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()
    return bytes(data)


NOT_IMAGES = {
    "text": (b"just some text, not a cat\n", "notes.txt"),
    "html": (b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", "page.html"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle r="4"/></svg>', "cat.svg"),
    "zip": (_zip_bytes(), "cats.zip"),
    "truncated_png": (encode(picture(9))[:300], "cut.png"),
    "truncated_jpeg": (encode(picture(9), "JPEG")[:700], "cut.jpg"),
    "garbled_png": (_garbled_png(), "garbled.png"),
}


@pytest.mark.parametrize("case", sorted(NOT_IMAGES))
def test_a_file_that_is_not_a_readable_image_is_422(client, case):
    data, name = NOT_IMAGES[case]
    response = client.post("/predict", data=upload((data, name)))
    assert response.status_code == 422
    assert response.is_json
    assert "not a readable image" in response.json["error"] and name in response.json["error"]
    assert_still_up(client)


def test_one_bad_image_in_a_batch_names_it(client):
    response = client.post("/predict", data=upload((encode(picture(0)), "ok.png"), (b"text", "notes.txt")))
    assert response.status_code == 422
    assert "'notes.txt'" in response.json["error"]


def test_a_missing_image_field_is_400(client):
    response = client.post("/predict", data={"comment": "no file"}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "missing the multipart file field 'image'" in response.json["error"]
    assert_still_up(client)


def test_a_misnamed_field_is_400_and_named(client):
    response = client.post("/predict", data=upload((encode(picture(0)), "pet.png"), field="file"))
    assert response.status_code == 400
    assert "'image'" in response.json["error"] and "'file'" in response.json["error"]


@pytest.mark.parametrize("body", [{"json": {"image": "cat.jpg"}}, {"data": b""}, {"data": b"raw bytes"}])
def test_a_request_that_is_not_multipart_is_400(client, body):
    response = client.post("/predict", **body)
    assert response.status_code == 400
    assert "multipart/form-data" in response.json["error"]
    assert_still_up(client)


def test_an_empty_file_is_400(client):
    response = client.post("/predict", data=upload((b"", "empty.jpg")))
    assert response.status_code == 400
    assert "empty" in response.json["error"]
    assert_still_up(client)


def test_a_decompression_bomb_is_refused_before_decoding(client, monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for width, height in [(1001, 1000), (10_000, 10_000), (100_000, 100_000)]:  # over our cap; over Pillow's 1x; 2x
        response = client.post("/predict", data=upload((png_with_header(width, height), "bomb.png")))
        assert response.status_code == 413, response.json
        assert "too large" in response.json["error"]
    monkeypatch.undo()
    assert_still_up(client)


def test_the_default_pixel_cap_is_below_pillows_warning_zone(model_dir):
    client = create_app({"SERVE_MODEL": str(model_dir)}).test_client()
    limit = client.get("/metadata").json["limits"]["max_pixels"]
    assert limit < Image.MAX_IMAGE_PIXELS  # Pillow only warns between 1x and 2x its own limit
    response = client.post("/predict", data=upload((png_with_header(9_500, 9_500), "bomb.png")))
    assert response.status_code == 413
    assert f"over the limit of {limit}" in response.json["error"]


def test_an_upload_over_the_size_limit_is_413_json(client):
    response = client.post("/predict", data=upload((b"\xff" * (300 * 1024), "huge.jpg")))
    assert response.status_code == 413
    assert response.is_json and "262144 bytes" in response.json["error"]
    assert_still_up(client)


def test_a_huge_text_field_is_413_json(model_dir):
    client = create_app({"SERVE_MODEL": str(model_dir), "MAX_CONTENT_LENGTH": 4 * 1024 * 1024}).test_client()
    data = {**upload((encode(picture(0)), "pet.png")), "comment": "x" * 600_000}
    response = client.post("/predict", data=data, content_type="multipart/form-data")
    assert response.status_code == 413
    assert response.json["error"].startswith("the form is too large")


def test_too_many_images_is_400(client):
    files = [(encode(picture(seed)), f"{seed}.png") for seed in range(5)]
    response = client.post("/predict", data=upload(*files))
    assert response.status_code == 400
    assert "too many images: 5" in response.json["error"] and "at most 4" in response.json["error"]
    assert_still_up(client)


def test_wrong_method_and_unknown_path_answer_json(client):
    assert client.get("/predict").status_code == 405 and "error" in client.get("/predict").json
    assert client.get("/nothing-here").status_code == 404 and "error" in client.get("/nothing-here").json


# --- configuration --------------------------------------------------------------------------------

def test_limits_come_from_environment_variables(model_dir, monkeypatch):
    monkeypatch.setenv("SERVE_MODEL", str(model_dir))
    monkeypatch.setenv("SERVE_MAX_IMAGES", "1")
    monkeypatch.setenv("SERVE_MAX_UPLOAD_BYTES", "5000")
    monkeypatch.setenv("SERVE_MAX_PIXELS", "")  # empty: unset, so the pipeline's own limit
    client = create_app().test_client()
    assert client.get("/metadata").json["limits"]["max_images"] == 1
    assert client.get("/metadata").json["limits"]["max_pixels"] == DEFAULT_MAX_PIXELS
    files = [(encode(picture(seed), "JPEG", quality=30), f"{seed}.jpg") for seed in range(2)]
    assert client.post("/predict", data=upload(*files)).status_code == 400
    assert client.post("/predict", data=upload((b"\0" * 6000, "big.jpg"))).status_code == 413


@pytest.mark.parametrize("value", ["lots", "0", "-3", "1.5"])
def test_a_bad_limit_is_a_user_error_naming_the_variable(model_dir, monkeypatch, value):
    monkeypatch.setenv("SERVE_MAX_IMAGES", value)
    with pytest.raises(UserError, match=f"^environment variable SERVE_MAX_IMAGES='{value}' is not valid: input should be"):
        create_app({"SERVE_MODEL": str(model_dir)})


def test_a_bad_app_config_value_names_its_key(model_dir):
    with pytest.raises(UserError, match="^app config MAX_CONTENT_LENGTH=0 is not valid: input should be greater than 0"):
        create_app({"SERVE_MODEL": str(model_dir), "MAX_CONTENT_LENGTH": 0})


def test_a_missing_model_starts_the_service_answering_503_with_the_reason(tmp_path):
    client = create_app({"SERVE_MODEL": str(tmp_path / "nothing"), "SERVE_RELOAD_SECONDS": 0}).test_client()
    for path in ("/health", "/health/ready"):
        answer = client.get(path)
        assert answer.status_code == 503 and answer.json["status"] == "unavailable"
        assert "nothing' has no model.json and model.pt" in answer.json["problem"]
    assert client.get("/health/live").status_code == 200
    for answer in (client.post("/predict", data=upload((encode(picture()), "a.png"))), client.get("/metadata")):
        assert answer.status_code == 503 and "has no model.json and model.pt" in answer.json["error"]
        assert "X-Model-Version" not in answer.headers


def test_debug_mode_asked_for_by_the_environment_is_refused_and_a_crash_shows_no_traceback(model_dir, monkeypatch):
    """FLASK_DEBUG=1 would turn on Werkzeug's debugger (arbitrary code for whoever reaches the
    port) and tracebacks in answers: the app stays out of debug mode, and a bug is a JSON 500."""
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app({"SERVE_MODEL": str(model_dir)})
    assert app.debug is False
    predictor = app.extensions["served_model"].current.predictor
    monkeypatch.setattr(predictor, "predict", lambda images: (_ for _ in ()).throw(RuntimeError("secret detail")))
    answer = app.test_client().post("/predict", data=upload((encode(picture()), "a.png")),
                                    content_type="multipart/form-data")
    assert answer.status_code == 500
    assert answer.get_json() == {"error": "internal error; the server log has the details."}
    assert b"secret detail" not in answer.data and b"Traceback" not in answer.data


def test_the_development_server_binds_loopback_by_default():
    from serving.__main__ import parse_args

    assert parse_args([]).host == "127.0.0.1"


@pytest.mark.slow
def test_the_development_command_reports_a_bad_setting_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "serving", "--model", str(tmp_path / "none")], cwd=ROOT,
                            env=dict(os.environ, SERVE_MAX_IMAGES="lots"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


# --- real processes: gunicorn, and the page in a headless browser ---------------------------------

@pytest.fixture
def gunicorn_server(model_dir):
    port = free_port()
    env = dict(os.environ, SERVE_MODEL=str(model_dir), SERVE_MAX_UPLOAD_BYTES="100000", SERVE_TORCH_THREADS="1",
               SERVE_BIND=f"127.0.0.1:{port}", SERVE_WORKERS="1")
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", "serving/gunicorn.conf.py"]  # the production command
    process = subprocess.Popen(gunicorn, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_the_service_under_gunicorn(gunicorn_server, model_dir):
    data = encode(picture(10), "JPEG")
    response = requests.post(f"{gunicorn_server}/predict", files={"image": ("pet.jpg", data)}, timeout=30)
    assert response.status_code == 200
    np.testing.assert_allclose(list(response.json()["probabilities"].values()),
                               offline_probabilities(model_dir, data), atol=2e-6)
    bad = requests.post(f"{gunicorn_server}/predict", files={"image": ("notes.txt", b"text")}, timeout=30)
    assert bad.status_code == 422 and "error" in bad.json()
    big = requests.post(f"{gunicorn_server}/predict", files={"image": ("big.jpg", b"\0" * 150_000)}, timeout=30)
    assert big.status_code == 413 and "100000 bytes" in big.json()["error"]
    assert requests.get(f"{gunicorn_server}/health", timeout=10).json()["status"] == "ok"


@pytest.mark.slow
def test_gunicorn_without_a_model_starts_and_says_why_it_is_not_ready(tmp_path):
    port = free_port()
    env = dict(os.environ, SERVE_MODEL=str(tmp_path / "none"), SERVE_BIND=f"127.0.0.1:{port}", SERVE_WORKERS="1")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "serving/gunicorn.conf.py"], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, answer = time.monotonic() + 120, None
        while answer is None and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
            except requests.RequestException:
                time.sleep(0.3)
        assert answer is not None and answer.status_code == 503
        assert "none' has no model.json and model.pt" in answer.json()["problem"]
        assert requests.get(f"http://127.0.0.1:{port}/health/live", timeout=10).status_code == 200
    finally:
        process.terminate()
        stderr = process.communicate(timeout=90)[1]  # after a client, the worker may use its graceful timeout (40 s)
    assert "Worker failed to boot" not in stderr and "Traceback" not in stderr
    assert "no model to serve yet" in stderr


@pytest.mark.slow
@pytest.mark.parametrize("variable, value", [("SERVE_THREADS", "lots"), ("SERVE_WORKERS", "0"), ("SERVE_MAX_PIXELS", "-1")])
def test_a_bad_server_setting_stops_gunicorn_naming_it(variable, value):
    env = dict(os.environ, SERVE_BIND=f"127.0.0.1:{free_port()}", **{variable: value})
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "serving/gunicorn.conf.py"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"error: environment variable {variable}={value!r} is not valid: input should be" in result.stderr
    assert "Traceback" not in result.stderr


class Browser:
    """Just enough of the W3C WebDriver protocol, spoken to Debian's chromedriver over HTTP."""

    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

    def __init__(self, driver: str, binary: str) -> None:
        port = free_port()
        self.process = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        wait_until_up(self.process, f"{self.base}/status", seconds=30)
        options = {"binary": binary, "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                              "--disable-dev-shm-usage", "--window-size=900,760"]}
        answer = self._call("POST", "/session",
                            {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}})
        self.session = f"/session/{answer['sessionId']}"

    def _call(self, method: str, path: str, payload: dict | None = None):
        response = requests.request(method, self.base + path, json=payload, timeout=60)
        value = response.json()["value"]
        if response.status_code != 200:
            raise AssertionError(f"webdriver {method} {path}: {value}")
        return value

    def open(self, url: str) -> None:
        self._call("POST", f"{self.session}/url", {"url": url})

    def find(self, css: str) -> str:
        return self._call("POST", f"{self.session}/element", {"using": "css selector", "value": css})[self.ELEMENT]

    def text(self, css: str) -> str:
        return self._call("GET", f"{self.session}/element/{self.find(css)}/text")

    def type(self, css: str, text: str) -> None:
        self._call("POST", f"{self.session}/element/{self.find(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self._call("POST", f"{self.session}/element/{self.find(css)}/click", {})

    def wait_text(self, css: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text(css)
            if text.strip():
                return text
            time.sleep(0.2)
        raise AssertionError(f"{css} stayed empty")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._call("GET", f"{self.session}/screenshot")))

    def close(self) -> None:
        try:
            self._call("DELETE", self.session)
        finally:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def browser():
    driver = shutil.which("chromedriver")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not driver or not binary:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium chromium-driver)")
    session = Browser(driver, binary)
    yield session
    session.close()


@pytest.fixture
def live_server(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.slow
def test_the_upload_page_in_a_headless_browser(browser, live_server, tmp_path, model_dir):
    image = tmp_path / "pet.jpg"
    image.write_bytes(encode(picture(11, size=(320, 240)), "JPEG"))
    browser.open(live_server + "/")
    assert "train" in browser.wait_text("#model")  # the footer reads /metadata
    browser.type("#file", str(image))
    browser.click("#submit")
    label = browser.wait_text("#label")
    expected = offline_probabilities(model_dir, image.read_bytes())
    assert label == CLASSES[int(np.argmax(expected))]
    rows = browser.text("#probabilities")
    for name, probability in zip(CLASSES, expected):
        assert f"{name} {probability * 100:.1f}%" in rows
    browser.screenshot(tmp_path / "page.png")
    print(f"screenshot: {tmp_path / 'page.png'}")
    assert Image.open(tmp_path / "page.png").size[0] > 0

    notes = tmp_path / "notes.png"
    notes.write_bytes(b"not an image at all")
    browser.type("#file", str(notes))
    browser.click("#submit")
    assert "not a readable image" in browser.wait_text("#error")
    browser.screenshot(tmp_path / "page-error.png")


# --- the model from MLflow: a local MLflow model, runs:/ and models:/name@alias ------------------

def mlflow_model_arguments(model_dir: Path) -> dict:
    """What the mirror passes to mlflow.pytorch.log_model: a float32 (-1, 3, S, S) signature and the sidecar."""
    from mlflow.models import infer_signature

    model, spec = load_model(model_dir)
    example = np.zeros((2, 3, spec.image_size, spec.image_size), dtype=np.float32)
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    return {"pytorch_model": model, "signature": signature, "input_example": example,
            "extra_files": [str(model_dir / "model.json")]}


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory, model_dir):
    """A throwaway tracking store with the tiny model logged, registered as cats-vs-dogs@champion."""
    import mlflow

    folder = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
        experiment = mlflow.create_experiment("serving-test", artifact_location=(folder / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            info = mlflow.pytorch.log_model(name="model", registered_model_name="cats-vs-dogs",
                                            **mlflow_model_arguments(model_dir))
        mlflow.MlflowClient().set_registered_model_alias("cats-vs-dogs", "champion", info.registered_model_version)
        local = folder / "local-model"
        mlflow.pytorch.save_model(path=str(local), **mlflow_model_arguments(model_dir))
        yield {"run_id": run.info.run_id, "version": str(info.registered_model_version), "local": local,
               "uri": f"sqlite:///{folder / 'mlflow.db'}", "experiment": experiment}
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "runs", "alias"])
def test_the_model_can_come_from_mlflow(mlflow_store, model_dir, kind):
    uri = {"local": str(mlflow_store["local"]), "runs": f"runs:/{mlflow_store['run_id']}/model",
           "alias": "models:/cats-vs-dogs@champion"}[kind]
    client = create_app({"SERVE_MODEL": uri}).test_client()
    data = encode(picture(12), "JPEG")
    body = client.post("/predict", data=upload((data, "pet.jpg"))).json
    np.testing.assert_allclose(list(body["probabilities"].values()), offline_probabilities(model_dir, data), atol=2e-6)
    metadata = client.get("/metadata").json
    assert metadata["classes"] == CLASSES and metadata["metrics"] == METRICS
    assert metadata["model"]["source"] == uri
    if kind == "alias":
        assert body["model"] == {"name": "cats-vs-dogs", "version": mlflow_store["version"]}
    if kind == "runs":
        assert body["model"]["version"] == mlflow_store["run_id"]


@pytest.mark.slow
def test_an_mlflow_model_without_the_sidecar_is_a_user_error(mlflow_store, tmp_path):
    copy = tmp_path / "no-sidecar"
    shutil.copytree(mlflow_store["local"], copy)
    shutil.rmtree(copy / "extra_files")
    answer = create_app({"SERVE_MODEL": str(copy)}).test_client().get("/health")
    assert answer.status_code == 503 and "has no extra_files/model.json" in answer.json["problem"]


@pytest.mark.slow
def test_the_registry_answers_alias_lookups_and_reports_an_unreadable_store(mlflow_store, tmp_path):
    from tracking.registry import Registry, RegistryUnavailable

    registry = Registry(mlflow_store["uri"])
    assert registry.alias_version("cats-vs-dogs", "champion") == mlflow_store["version"]
    assert registry.alias_version("cats-vs-dogs", "no-such-alias") is None
    assert registry.alias_version("no-such-model", "champion") is None
    garbage = tmp_path / "garbage.db"
    garbage.write_text("this is not a database")
    with pytest.raises(RegistryUnavailable, match="garbage.db"):
        Registry(f"sqlite:///{garbage}").alias_version("cats-vs-dogs", "champion")


@pytest.mark.slow
def test_by_default_the_champion_is_served_and_followed_when_the_alias_moves(mlflow_store, model_dir, tmp_path,
                                                                             monkeypatch):
    """No SERVE_MODEL: the store's cats-vs-dogs@champion if it has one, else models/best; a moved alias is reloaded."""
    import mlflow

    from lifecycle.core import paths

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store["uri"])
    monkeypatch.delenv("SERVE_MODEL", raising=False)
    best = make_model(tmp_path / "best", seed=7)  # a different model in the folder than in the registry
    monkeypatch.setattr(paths, "BEST_MODEL", best)
    app = create_app({"SERVE_RELOAD_SECONDS": 0})
    client = app.test_client()
    data = encode(picture(13), "JPEG")

    health = client.get("/health").json
    assert health["model"] == {"name": "cats-vs-dogs", "version": mlflow_store["version"],
                               "source": "models:/cats-vs-dogs@champion"}
    assert "has cats-vs-dogs@champion" in health["source_reason"]
    answer = client.post("/predict", data=upload((data, "pet.jpg")))
    assert answer.headers["X-Model-Version"] == mlflow_store["version"]
    np.testing.assert_allclose(list(answer.json["probabilities"].values()), offline_probabilities(model_dir, data),
                               atol=2e-6)

    registry = mlflow.MlflowClient(tracking_uri=mlflow_store["uri"], registry_uri=mlflow_store["uri"])
    promoted = make_model(tmp_path / "promoted", seed=8)
    with mlflow.start_run(experiment_id=mlflow_store["experiment"]):
        version = mlflow.pytorch.log_model(name="model", registered_model_name="cats-vs-dogs",
                                           **mlflow_model_arguments(promoted)).registered_model_version
    try:
        registry.set_registered_model_alias("cats-vs-dogs", "champion", version)
        assert app.extensions["served_model"].refresh() is True
        metadata = client.get("/metadata").json
        assert metadata["model"]["version"] == str(version) and metadata["model"]["source"] == "models:/cats-vs-dogs@champion"
        body = client.post("/predict", data=upload((data, "pet.jpg"))).json
        assert body["model"]["version"] == str(version)
        np.testing.assert_allclose(list(body["probabilities"].values()), offline_probabilities(promoted, data), atol=2e-6)

        registry.delete_registered_model_alias("cats-vs-dogs", "champion")  # no champion: models/best
        assert app.extensions["served_model"].refresh() is True
        health = client.get("/health").json
        assert health["model"]["source"] == paths.relative(best) and "has no cats-vs-dogs@champion" in health["source_reason"]
        body = client.post("/predict", data=upload((data, "pet.jpg"))).json
        np.testing.assert_allclose(list(body["probabilities"].values()), offline_probabilities(best, data), atol=2e-6)
    finally:
        registry.set_registered_model_alias("cats-vs-dogs", "champion", mlflow_store["version"])
