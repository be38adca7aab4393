"""After deployment, in one process: every answer logged and named, feedback by request id, /metrics."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from lifecycle import prediction_log
from serving.app import create_app
from tests.test_serving import make_model


def png(seed: int, size: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("deployed") / "models" / "best")


def serve(model_dir: Path, log_dir: Path, **settings):
    app = create_app({"SERVE_MODEL": str(model_dir), "SERVE_LOG_DIR": str(log_dir), "SERVE_RELOAD_SECONDS": 0,
                      **settings})
    return app, app.test_client()


def predict(client, *images: bytes):
    response = client.post("/predict", data={"image": [(io.BytesIO(data), f"{i}.png") for i, data in enumerate(images)]},
                           content_type="multipart/form-data")
    assert response.status_code == 200, response.json
    return response.json


def logged(app, log_dir: Path) -> list[dict]:
    assert app.extensions["prediction_log"].flush()
    return prediction_log.read_log(log_dir).records


def test_every_image_answered_is_one_record_with_the_request_id_and_no_pixels(model_dir, tmp_path):
    app, client = serve(model_dir, tmp_path)
    one = predict(client, png(1))
    two = predict(client, png(2), png(3))
    assert one["request_id"] != two["request_id"] and len(one["request_id"]) == 32
    records = logged(app, tmp_path)
    assert [(r["request_id"], r["index"]) for r in records] == [(one["request_id"], 0), (two["request_id"], 0),
                                                               (two["request_id"], 1)]
    first = records[0]
    assert first["label"] == one["label"] and first["probabilities"] == one["probabilities"]
    assert first["model"]["name"] == one["model"]["name"] and first["model"]["version"] == one["model"]["version"]
    assert first["model"]["source"] == str(model_dir) and first["model"]["digest"]
    assert (first["width"], first["height"], first["format"]) == (44, 40, "PNG")
    assert first["sha256"] == __import__("hashlib").sha256(png(1)).hexdigest()
    assert set(first["statistics"]) == {"brightness", "contrast", "red", "green", "blue"}
    assert len(first["embedding"]) == 16 and all(isinstance(v, float) for v in first["embedding"])
    assert not (tmp_path / prediction_log.IMAGES).exists()  # no pixels kept by default


def test_images_are_kept_by_sha256_only_when_asked(model_dir, tmp_path):
    app, client = serve(model_dir, tmp_path, SERVE_KEEP_IMAGES=True)
    predict(client, png(4))
    [record] = logged(app, tmp_path)
    assert (tmp_path / prediction_log.IMAGES / record["sha256"]).read_bytes() == png(4)


def test_feedback_labels_a_request_idempotently_and_refuses_unknown_ids_and_labels(model_dir, tmp_path):
    app, client = serve(model_dir, tmp_path)
    answer = predict(client, png(5), png(6))
    url = "/feedback"
    assert client.post(url, json={"request_id": answer["request_id"], "label": "dog"}).json == {
        "request_id": answer["request_id"], "label": "dog", "images": 2}
    assert client.post(url, json={"request_id": answer["request_id"], "label": "cat"}).status_code == 200
    assert prediction_log.labels(tmp_path) == {answer["request_id"]: "cat"}  # the last label counts
    unknown = client.post(url, json={"request_id": "0" * 32, "label": "cat"})
    assert unknown.status_code == 404 and "not in the prediction log" in unknown.json["error"]
    bad = client.post(url, json={"request_id": answer["request_id"], "label": "horse"})
    assert bad.status_code == 400 and "'horse' is not one of" in bad.json["error"] and "cat, dog" in bad.json["error"]
    assert client.post(url, data="label=cat").status_code == 400
    assert client.post(url, json={"request_id": 7, "label": "cat"}).status_code == 400


def test_feedback_for_a_request_rotated_away_says_so(model_dir, tmp_path):
    app, client = serve(model_dir, tmp_path, SERVE_LOG_MAX_BYTES=1500, SERVE_LOG_BACKUPS=1)
    first = predict(client, png(7))
    for seed in range(8, 14):
        predict(client, png(seed))
    logged(app, tmp_path)
    gone = client.post("/feedback", json={"request_id": first["request_id"], "label": "cat"})
    assert gone.status_code == 404 and "rotated away" in gone.json["error"]


def test_a_refusing_disk_never_fails_an_answer_and_is_counted(model_dir, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    app, client = serve(model_dir, blocked)
    before = samples(client)
    predict(client, png(1), png(2))
    logged(app, blocked)
    assert samples(client).get(("cats_vs_dogs_prediction_log_failures_total", ()), 0) - \
        before.get(("cats_vs_dogs_prediction_log_failures_total", ()), 0) == 2


def samples(client) -> dict:
    text = client.get("/metrics").get_data(as_text=True)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_move_by_exactly_what_was_sent(model_dir, tmp_path):
    app, client = serve(model_dir, tmp_path)
    before = samples(client)
    answers = [predict(client, png(1)), predict(client, png(2), png(3), png(4))]
    client.post("/predict", data={}, content_type="multipart/form-data")  # a 400
    after = samples(client)

    def moved(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("cats_vs_dogs_requests_total", route="/predict", status="200") == 2
    assert moved("cats_vs_dogs_requests_total", route="/predict", status="400") == 1
    assert moved("cats_vs_dogs_images_per_request_count") == 2 and moved("cats_vs_dogs_images_per_request_sum") == 4
    labels = [a["label"] for a in answers[:1]] + [p["label"] for p in answers[1]["predictions"]]
    for label in ("cat", "dog"):
        assert moved("cats_vs_dogs_predictions_total", label=label) == labels.count(label)
    assert moved("cats_vs_dogs_request_duration_seconds_count", route="/predict") == 3
    version = answers[0]["model"]["version"]
    model = {dict(k[1])["version"]: v for k, v in after.items() if k[0] == "cats_vs_dogs_model_info"}
    assert model[version] == 1


@pytest.mark.slow
def test_under_gunicorns_two_workers_metrics_and_the_log_count_every_request_once(model_dir, tmp_path):
    """Two worker processes, many threads: /metrics sums the workers, and the log holds each image once."""
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from tests.servers import free_port, wait_until_up
    from tests.test_serving import ROOT

    port = free_port()
    env = dict(os.environ, SERVE_MODEL=str(model_dir), SERVE_TORCH_THREADS="1", SERVE_BIND=f"127.0.0.1:{port}",
               SERVE_WORKERS="2", SERVE_LOG_DIR=str(tmp_path / "log"), SERVE_LOG_MAX_BYTES="20000")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "serving/gunicorn.conf.py"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, f"{url}/health")

        def scrape() -> dict:
            text = requests.get(f"{url}/metrics", timeout=30).text
            return {(s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in text_string_to_metric_families(text) for s in family.samples}

        before = scrape()

        def send(seed: int) -> dict:
            files = [("image", (f"{seed}.png", png(seed))), ("image", (f"{seed}b.png", png(seed + 1000)))]
            response = requests.post(f"{url}/predict", files=files, timeout=60)
            assert response.status_code == 200
            return response.json()

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, range(60)))
        after = scrape()
        key = ("cats_vs_dogs_requests_total", (("route", "/predict"), ("status", "200")))
        assert after[key] - before.get(key, 0) == 60
        images = ("cats_vs_dogs_images_per_request_sum", ())
        assert after[images] - before.get(images, 0) == 120
        predicted = sum(v - before.get(k, 0) for k, v in after.items() if k[0] == "cats_vs_dogs_predictions_total")
        assert predicted == 120
        feedback = requests.post(f"{url}/feedback", json={"request_id": answers[0]["request_id"], "label": "dog"},
                                 timeout=30)
        assert feedback.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=60)
    found = prediction_log.read_log(tmp_path / "log")
    assert found.unreadable == 0 and len(prediction_log.log_files(tmp_path / "log")) > 1  # rotated, both workers
    assert sorted((r["request_id"], r["index"]) for r in found.records) == sorted(
        (a["request_id"], i) for a in answers for i in range(2))


def test_labelled_served_images_become_ingest_rows_checked_against_their_sha256(model_dir, tmp_path):
    from lifecycle.sources import from_served

    log_dir = tmp_path / "served"
    app, client = serve(model_dir, log_dir, SERVE_KEEP_IMAGES=True)
    labelled, unlabelled, lost, forged = (predict(client, png(seed)) for seed in (20, 21, 22, 23))
    logged(app, log_dir)
    for answer, label in ((labelled, "dog"), (lost, "cat"), (forged, "cat")):
        assert client.post("/feedback", json={"request_id": answer["request_id"], "label": label}).status_code == 200
    records = {r["request_id"]: r for r in prediction_log.read_log(log_dir).records}
    (log_dir / "images" / records[lost["request_id"]]["sha256"]).unlink()
    (log_dir / "images" / records[forged["request_id"]]["sha256"]).write_bytes(png(99))
    result = from_served(log_dir, log_dir / "images", tmp_path / "raw")
    digest = records[labelled["request_id"]]["sha256"]
    assert result.manifest.to_dict("records") == [{"image_path": f"images/served/{digest}.png", "label": "dog"}]
    assert (tmp_path / "raw" / "images" / "served" / f"{digest}.png").read_bytes() == png(20)
    assert result.served == 1
    reasons = {skip.path: skip.reason for skip in result.skipped.rows}
    assert reasons == {f"served/{records[lost['request_id']]['sha256']}": "served_image_missing",
                       f"served/{records[forged['request_id']]['sha256']}": "sha256_mismatch"}
    assert not (tmp_path / "raw" / "images" / "served" / f"{records[forged['request_id']]['sha256']}.png").exists()


def test_a_labelling_tools_csv_is_checked_and_recorded_like_the_endpoint(model_dir, tmp_path):
    import subprocess
    import sys

    from tests.test_serving import ROOT

    log_dir = tmp_path / "served"
    app, client = serve(model_dir, log_dir)
    first, second = predict(client, png(30)), predict(client, png(31))
    logged(app, log_dir)
    client.post("/feedback", json={"request_id": first["request_id"], "label": "dog"})
    labels = tmp_path / "export.csv"
    labels.write_text(f"request_id,label\n{first['request_id']},cat\n{second['request_id']},horse\n{'f' * 32},dog\n")
    run = subprocess.run([sys.executable, "-m", "serving.feedback", str(labels), "--log-dir", str(log_dir)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 1
    assert "1 label(s) recorded" in run.stdout
    assert "export.csv:3: label 'horse' is not one of" in run.stderr and "export.csv:4: request_id" in run.stderr
    assert prediction_log.labels(log_dir) == {first["request_id"]: "cat"}  # the CSV came later: its label counts
