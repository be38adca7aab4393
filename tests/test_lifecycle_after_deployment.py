"""The loop after deployment, end to end (slow): serve, drift, feedback, retrain, the gate, /metrics."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port, wait_until_up

# A bigger tiny dataset than the default copy's, so the validation split (the reference) has
# enough images for the drift tests; thresholds stay the committed ones but for min_images.
OVERRIDES = {"ingest": {"synthetic": {"count": 400}}, "monitor": {"min_images": 20}}


def shifted(image: np.ndarray) -> np.ndarray:
    """Darker, re-coloured and rotated: what a new camera in a dim room might send."""
    pixels = image.astype(np.float64) * 0.5
    pixels[..., 2] = np.clip(pixels[..., 2] * 1.8 + 30, 0, 255)
    return np.rot90(pixels, 1).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def scrape(url: str) -> dict:
    text = requests.get(f"{url}/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.slow
def test_serve_drift_feedback_retrain_and_the_gate(repo_copy):
    repo = repo_copy(OVERRIDES)
    repo.dvc("repro")
    monitor = json.loads((repo.path / "metrics/monitor.json").read_text())
    assert monitor["verdict"] == "no_log" and monitor["records"] == 0  # nothing served yet: it passes

    # 1. serve the default model (no champion yet: models/best), two workers
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SERVE_", "PROMETHEUS_"))}
    env.update(SERVE_BIND=f"127.0.0.1:{port}", SERVE_WORKERS="2", SERVE_TORCH_THREADS="1", SERVE_KEEP_IMAGES="1",
               SERVE_RELOAD_SECONDS="0")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "serving/gunicorn.conf.py"], cwd=repo.path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    split = np.load(repo.path / "data/processed/split/test.npz")
    images, labels = split["images"], split["labels"]
    classes = json.loads((repo.path / "data/processed/classes.json").read_text())["classes"]
    sent = 0

    def send(batch: list[np.ndarray]) -> list[str]:
        nonlocal sent
        ids = []
        for image in batch:
            answer = requests.post(f"{url}/predict", files={"image": ("x.png", png(image))}, timeout=60)
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["request_id"])
            sent += 1
        return ids

    try:
        wait_until_up(server, f"{url}/health")
        before = scrape(url)

        # 2-3. the training distribution: no drift; a shifted one: drift
        send(list(images[:40]))
        first = repo.run(sys.executable, "-m", "stages.monitor", "--fail-on-drift")
        report = json.loads((repo.path / "metrics/monitor.json").read_text())
        assert report["verdict"] == "no_drift", first.stdout
        [(version, judged)] = report["versions"].items()
        assert judged["images"] == 40 and "embedding_auc" in judged  # the served model is models/best: embeddings too
        moved = shifted_ids = send([shifted(image) for image in images[:40]])
        second = repo.run(sys.executable, "-m", "stages.monitor", "--fail-on-drift", check=False)
        assert second.returncode == 1, second.stdout + second.stderr
        report = json.loads((repo.path / "metrics/monitor.json").read_text())
        assert report["verdict"] == "drift" and report["records"] == 80
        assert "brightness" in report["versions"][version]["drifted_features"]

        # 4. feedback: the true labels of 30 shifted images
        for request_id, label in zip(shifted_ids[:30], labels[:30]):
            answer = requests.post(f"{url}/feedback", json={"request_id": request_id, "label": classes[int(label)]},
                                   timeout=30)
            assert answer.status_code == 200, answer.text

        # 6. /metrics counts exactly what was sent, over both workers
        after = scrape(url)
        key = ("cats_vs_dogs_requests_total", (("route", "/predict"), ("status", "200")))
        assert after[key] - before.get(key, 0) == sent == len(moved) + 40
        feedback = ("cats_vs_dogs_requests_total", (("route", "/feedback"), ("status", "200")))
        assert after[feedback] - before.get(feedback, 0) == 30
    finally:
        server.terminate()
        server.wait(timeout=60)

    # 5. the served images join the data; the model retrains on them; the gate decides and records
    repo.run(sys.executable, "-m", "tracking.promote")  # the first model becomes the champion
    repo.set_params({"ingest": {"served": True}})
    retrained = repo.dvc("repro")
    ingest = json.loads((repo.path / "metrics/ingest.json").read_text())
    assert ingest["served"] == 30, ingest
    assert "Running stage 'train'" in retrained.stdout
    gate = repo.run(sys.executable, "-m", "tracking.promote", check=False)
    assert gate.returncode in (0, 1), gate.stdout + gate.stderr
    decision = json.loads((repo.path / "metrics/promotion.json").read_text())
    assert decision["decision"] in ("promoted", "refused") and decision["candidate"]["version"] == 2
    assert decision["paired"]["test"] and decision["paired"]["p_value"] is not None
