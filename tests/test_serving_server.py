"""The production stack on loopback: stalled clients cannot stop it, and a promoted model is picked up
while requests keep being answered (by the watcher, and by gunicorn's HUP).

Each test starts ``gunicorn -c serving/gunicorn.conf.py`` behind nginx with ``serving/nginx.conf``
as docs/serving.md does, on free ports, with a tiny model and settings given through the
documented environment variables. Every wait is bounded.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from benchmarks.stalled_clients import nginx_binary, open_stalled, start_nginx, wait_closed
from lifecycle.models import ModelSpec, SeedCNN, save_model
from tests.servers import free_port, stop_process_group
from tests.test_serving import CLASSES, encode, make_model, offline_probabilities, picture

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


class Server:
    """``gunicorn -c serving/gunicorn.conf.py`` behind nginx, each in its own process group, their logs in files."""

    def __init__(self, tmp_path: Path, extra_args: tuple[str, ...] = (), probe: str = "/health", **env: str) -> None:
        if nginx_binary() is None:
            pytest.skip("nginx is not installed (Debian: apt-get install -y nginx)")
        self.port, self.gunicorn_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"gunicorn-{self.port}.log"
        self.nginx_log_path = tmp_path / f"nginx-{self.port}.log"
        self.pidfile = tmp_path / f"gunicorn-{self.port}.pid"
        environment = dict(os.environ, SERVE_BIND=f"127.0.0.1:{self.gunicorn_port}", SERVE_TORCH_THREADS="1",
                           SERVE_PIDFILE=str(self.pidfile), **env)
        environment.pop("MLFLOW_TRACKING_URI", None)
        self.process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "serving/gunicorn.conf.py",
                                         *extra_args], cwd=ROOT, env=environment, stdout=open(self.log_path, "w"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.nginx_prefix = tmp_path / f"nginx-{self.port}"
        self.nginx = start_nginx(self.nginx_prefix, self.port, self.gunicorn_port, open(self.nginx_log_path, "w"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"gunicorn exited {self.process.returncode}: {self.log()}"
            assert self.nginx.poll() is None, f"nginx exited {self.nginx.returncode}: {self.nginx_log()}"
            try:
                if requests.get(f"{self.url}{probe}", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"{self.url} did not answer within 120 s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def nginx_log(self) -> str:
        return self.nginx_log_path.read_text()

    def worker_pids(self) -> list[int]:
        """The workers gunicorn booted, oldest first (from its log)."""
        return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", self.log())]

    def wait_for_log(self, pattern: str, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.log())) < count:
            assert self.process.poll() is None, f"gunicorn exited {self.process.returncode}: {self.log()}"
            assert time.monotonic() < deadline, f"no {count} x {pattern!r} within {timeout} s: {self.log()}"
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process_group(self.nginx)
        stop_process_group(self.process)


def predict(url: str, data: bytes, timeout: float = 30) -> requests.Response:
    return requests.post(f"{url}/predict", files={"image": ("pet.jpg", data)}, timeout=timeout)


# --- slow clients ----------------------------------------------------------------------------------

CLIENT_TIMEOUT = 10.0  # serving/nginx.conf's client_header_timeout and client_body_timeout


@pytest.fixture
def served(tmp_path):
    # One worker with 4 threads: 16 stalled clients would hold every thread, were nginx to pass them on
    # (proxy_request_buffering off shows it). --timeout 3: gunicorn's worker heartbeat is short, so a
    # worker killed because a thread waits on a client would show (WORKER TIMEOUT, and a 502).
    server = Server(tmp_path, ("--timeout", "3"), SERVE_MODEL=str(make_model(tmp_path / "best")), SERVE_WORKERS="1",
                    SERVE_THREADS="4", SERVE_RELOAD_SECONDS="0")
    yield server, tmp_path / "best"
    server.stop()


def test_sixteen_stalled_clients_do_not_stop_the_service(served):
    server, model_dir = served
    data = encode(picture(20), "JPEG")
    assert predict(server.url, data).status_code == 200  # warm: the first request of a worker pays for setup

    stalled = [open_stalled("127.0.0.1", server.port) for _ in range(16)]
    headers_only = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    headers_only.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; bou")
    opened = time.monotonic()
    try:
        time.sleep(1.0)  # nginx has taken them in and is waiting on their bodies
        for _ in range(5):
            began = time.monotonic()
            response = predict(server.url, data, timeout=5)
            elapsed = time.monotonic() - began
            assert response.status_code == 200 and elapsed < 1.0, (response.status_code, elapsed)
            np.testing.assert_allclose(list(response.json()["probabilities"].values()),
                                       offline_probabilities(model_dir, data), atol=2e-6)

        deadline = time.monotonic() + CLIENT_TIMEOUT + 20  # one bound for all seventeen
        outcomes = [wait_closed(sock, timeout=max(0.01, deadline - time.monotonic())) for sock in stalled + [headers_only]]
    finally:
        for sock in stalled + [headers_only]:
            sock.close()
    for status, seconds in outcomes:
        assert seconds is not None, "a stalled connection was left open"
        assert status is None, status  # nginx closes a timed-out client without an answer
    open_for = time.monotonic() - opened
    assert CLIENT_TIMEOUT - 0.5 < open_for < CLIENT_TIMEOUT + 20  # closed by nginx's timeout, not before
    access = (server.nginx_prefix / "access.log").read_text()
    assert len(re.findall(r'"POST /predict HTTP/1.1" 408 ', access)) == 17, access
    log = server.log()
    assert "WORKER TIMEOUT" not in log and "Traceback" not in log
    assert predict(server.url, data).status_code == 200


def test_the_production_stack_keeps_the_limits(served):
    server, _ = served
    big = requests.post(f"{server.url}/predict", files={"image": ("big.jpg", b"\0" * 50_000_000)}, timeout=60)
    assert big.status_code == 413 and "16777216 bytes" in big.json()["error"]  # the app's limit, not nginx's
    huge = requests.post(f"{server.url}/predict", files={"image": ("huge.jpg", b"\0" * 70_000_000)}, timeout=60)
    assert huge.status_code == 413 and "67108864 bytes" in huge.json()["error"]  # nginx's: it buffers no more
    many = [("image", (f"{i}.jpg", b"x")) for i in range(200)]
    answer = requests.post(f"{server.url}/predict", files=many, timeout=60)
    assert answer.status_code == 400 and "too many images: 200" in answer.json()["error"]
    assert requests.post(f"{server.url}/predict", json={"image": "x"}, timeout=30).status_code == 400
    stop_process_group(server.process)  # gunicorn down: nginx answers for it, in JSON
    down = requests.get(f"{server.url}/health", timeout=30)
    assert down.status_code == 503 and "not answering" in down.json()["error"]


# --- hot reload ------------------------------------------------------------------------------------

class SteadyClients:
    """``count`` threads posting one image in a loop; every answer kept as (status, version, probabilities)."""

    def __init__(self, url: str, data: bytes, count: int = 4) -> None:
        self.url, self.data = url, data
        self.answers: list[tuple[int | str, str | None, list[float] | None]] = []
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(count)]

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                response = session.post(f"{self.url}/predict", files={"image": ("pet.jpg", self.data)}, timeout=60)
                body = response.json() if response.status_code == 200 else {}
                self.answers.append((response.status_code, body.get("model", {}).get("version"),
                                     list(body.get("probabilities", {}).values()) or None))
            except requests.RequestException as error:
                self.answers.append((type(error).__name__, None, None))
            self.seconds.append(time.monotonic() - began)

    def summary(self) -> str:
        ms = np.array(self.seconds) * 1000
        failed = sum(1 for status, _, _ in self.answers if status != 200)
        return (f"{len(self.answers)} requests, {failed} failed, p50 {np.percentile(ms, 50):.0f} ms, "
                f"p99 {np.percentile(ms, 99):.0f} ms, max {ms.max():.0f} ms")

    def __enter__(self) -> "SteadyClients":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)


def wait_for_version(url: str, version: str, timeout: float = 60, in_a_row: int = 8) -> None:
    """Until ``in_a_row`` consecutive /metadata answers (from any worker) name ``version``."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        try:
            body = requests.get(f"{url}/metadata", timeout=30).json()
            seen = seen + 1 if (body.get("model") or {}).get("version") == version else 0  # a 503 has none
        except requests.RequestException:
            seen = 0
        if seen >= in_a_row:
            return
        time.sleep(0.1)
    raise AssertionError(f"/metadata did not settle on version {version} within {timeout} s")


def check_answers(answers, versions: dict[str, Path], data: bytes) -> None:
    """Every request succeeded, and each answer came from the model version it names."""
    assert answers, "no requests were sent"
    failures = [a for a in answers if a[0] != 200]
    assert not failures, f"{len(failures)} of {len(answers)} requests failed: {failures[:3]}"
    expected = {version: offline_probabilities(folder, data) for version, folder in versions.items()}
    for _, version, probabilities in answers:
        assert version in expected, version
        np.testing.assert_allclose(probabilities, expected[version], atol=2e-6)


def versioned_model(folder: Path, version: str, seed: int) -> Path:
    """The tiny model with ``info.version`` set, the version the service names."""
    torch.manual_seed(seed)
    spec = ModelSpec(architecture="seed_cnn", classes=CLASSES, image_size=32, arguments={"channels": [8]},
                     info={"stage": "train", "version": version})
    save_model(SeedCNN(image_size=32, channels=(8,)), spec, folder)
    return folder


def test_a_promoted_model_is_picked_up_while_requests_keep_succeeding(tmp_path):
    live = versioned_model(tmp_path / "best", "v1", seed=0)
    versions = {"v1": versioned_model(tmp_path / "v1", "v1", seed=0), "v2": versioned_model(tmp_path / "v2", "v2", seed=1)}
    server = Server(tmp_path, SERVE_MODEL=str(live), SERVE_RELOAD_SECONDS="1")
    data = encode(picture(21), "JPEG")
    try:
        with SteadyClients(server.url, data) as clients:
            time.sleep(1.0)
            versioned_model(live, "v2", seed=1)  # the promotion: models/best replaced, as dvc repro select does
            wait_for_version(server.url, "v2")
            time.sleep(1.0)
        print(f"\nthrough a reload by the watcher: {clients.summary()}")
        check_answers(clients.answers, versions, data)
        assert {version for _, version, _ in clients.answers} == {"v1", "v2"}
        assert clients.answers[-1][1] == "v2"
        assert requests.get(f"{server.url}/health", timeout=10).json()["model"]["version"] == "v2"
        assert server.log().count("reloaded: now serving") == 2  # once per worker, no restart
    finally:
        server.stop()


def test_gunicorns_hup_reloads_without_dropping_requests(tmp_path):
    live = versioned_model(tmp_path / "best", "v1", seed=0)
    versions = {"v1": versioned_model(tmp_path / "v1", "v1", seed=0), "v2": versioned_model(tmp_path / "v2", "v2", seed=1)}
    server = Server(tmp_path, SERVE_MODEL=str(live), SERVE_RELOAD_SECONDS="0")  # no watcher: only HUP reloads
    data = encode(picture(22), "JPEG")
    try:
        with SteadyClients(server.url, data) as clients:
            time.sleep(1.0)
            versioned_model(live, "v2", seed=1)
            time.sleep(1.5)
            assert requests.get(f"{server.url}/metadata", timeout=10).json()["model"]["version"] == "v1"
            master = int(server.pidfile.read_text())
            os.kill(master, signal.SIGHUP)  # the documented command: kill -HUP $(cat $SERVE_PIDFILE)
            wait_for_version(server.url, "v2")
            time.sleep(1.0)
        print(f"\nthrough a HUP: {clients.summary()}")
        check_answers(clients.answers, versions, data)
        assert clients.answers[-1][1] == "v2"
        log = server.log()
        assert "Hang up: Master" in log
        assert len(re.findall(r"Booting worker", log)) == 4  # two old workers retired, two new ones
    finally:
        server.stop()


# --- a model file that does not load -----------------------------------------------------------------

QUICK_STOP = ("--graceful-timeout", "5")  # the tiny model's requests finish at once; the tests stop sooner
LOADED = r"\] (serving |no model to serve yet)"  # a worker's model source is set up: loaded, fallen back, or none


def corrupt(folder: Path) -> None:
    """What the colleague measured: models/best's weights truncated, then overwritten with random bytes."""
    weights = folder / "model.pt"
    weights.write_bytes(weights.read_bytes()[:1000])
    time.sleep(0.05)
    weights.write_bytes(np.random.default_rng(0).bytes(20_000))


def wait_for_health(url: str, status: str, timeout: float = 60, in_a_row: int = 8) -> dict:
    """Until ``in_a_row`` consecutive /health answers (from any worker) say ``status``; the last body."""
    deadline = time.monotonic() + timeout
    seen, body = 0, None
    while time.monotonic() < deadline:
        try:
            body = requests.get(f"{url}/health", timeout=30).json()
            seen = seen + 1 if body["status"] == status else 0
        except requests.RequestException:
            seen = 0
        if seen >= in_a_row:
            return body
        time.sleep(0.1)
    raise AssertionError(f"/health did not settle on {status!r} within {timeout} s; last: {body}")


def test_hup_with_a_corrupt_model_on_disk_keeps_serving_the_last_good_one(tmp_path):
    live = versioned_model(tmp_path / "best", "v1", seed=0)
    versions = {"v1": versioned_model(tmp_path / "v1", "v1", seed=0), "v2": versioned_model(tmp_path / "v2", "v2", seed=1)}
    server = Server(tmp_path, QUICK_STOP, SERVE_MODEL=str(live), SERVE_RELOAD_SECONDS="1")
    data = encode(picture(23), "JPEG")
    try:
        with SteadyClients(server.url, data) as clients:
            time.sleep(1.0)
            corrupt(live)
            body = wait_for_health(server.url, "degraded")  # the watcher tried it, kept v1, and says so
            assert body["model"]["version"] == "v1" and f"{live}/model.pt could not be loaded" in body["problem"]
            os.kill(int(server.pidfile.read_text()), signal.SIGHUP)
            server.wait_for_log(r"Booting worker", 4)  # two new workers, loading the corrupt file at boot
            server.wait_for_log(LOADED, 4)
            time.sleep(2.0)  # the old workers are gone; only the new ones answer
            answers_after_hup = len(clients.answers)
            body = wait_for_health(server.url, "degraded")
            time.sleep(1.0)
        print(f"\nthrough a HUP with a corrupt model: {clients.summary()}")
        check_answers(clients.answers, versions, data)
        assert {version for _, version, _ in clients.answers} == {"v1"}
        assert len(clients.answers) > answers_after_hup  # answered after the new workers took over
        assert body["model"]["version"] == "v1" and f"{live}/model.pt could not be loaded" in body["problem"]
        assert server.process.poll() is None and "Worker failed to boot" not in server.log()

        versioned_model(live, "v2", seed=1)  # a good model returns: picked up, and the service is ok again
        wait_for_version(server.url, "v2")
        assert wait_for_health(server.url, "ok")["model"]["version"] == "v2"
    finally:
        server.stop()


@pytest.mark.parametrize("restart", ["sigkill", "max_requests"])
def test_a_restarted_worker_with_a_corrupt_model_on_disk_serves_the_last_good_one(tmp_path, restart):
    """One worker, so its replacement answers everything: killed (an OOM kill), or recycled by max_requests."""
    live = versioned_model(tmp_path / "best", "v1", seed=0)
    original = versioned_model(tmp_path / "v1", "v1", seed=0)
    extra = ("--max-requests", "20") if restart == "max_requests" else ()
    server = Server(tmp_path, QUICK_STOP + extra, SERVE_MODEL=str(live), SERVE_RELOAD_SECONDS="0", SERVE_WORKERS="1")
    data = encode(picture(24), "JPEG")
    try:
        assert predict(server.url, data).status_code == 200
        corrupt(live)
        (worker,) = server.worker_pids()
        if restart == "sigkill":
            os.kill(worker, signal.SIGKILL)
        else:
            for _ in range(25):
                requests.get(f"{server.url}/health/live", timeout=30)
        server.wait_for_log(r"Booting worker", 2)
        server.wait_for_log(LOADED, 2)
        for _ in range(5):
            response = predict(server.url, data)
            assert response.status_code == 200 and response.json()["model"]["version"] == "v1", response.text
            np.testing.assert_allclose(list(response.json()["probabilities"].values()),
                                       offline_probabilities(original, data), atol=2e-6)
        health = requests.get(f"{server.url}/health/ready", timeout=30)
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert f"{live}/model.pt could not be loaded" in health.json()["problem"]
        assert server.process.poll() is None and "Worker failed to boot" not in server.log()
    finally:
        server.stop()


def test_a_start_with_a_corrupt_model_answers_503_until_a_good_one_appears(tmp_path):
    live = versioned_model(tmp_path / "best", "v1", seed=0)
    corrupt(live)
    server = Server(tmp_path, QUICK_STOP, probe="/health/live", SERVE_MODEL=str(live), SERVE_RELOAD_SECONDS="1")
    data = encode(picture(25), "JPEG")
    try:
        for path in ("/health", "/health/ready"):
            answer = requests.get(f"{server.url}{path}", timeout=30)
            assert answer.status_code == 503 and answer.json()["status"] == "unavailable"
            assert f"{live}/model.pt could not be loaded" in answer.json()["problem"]
        refused = predict(server.url, data)
        assert refused.status_code == 503 and f"{live}/model.pt could not be loaded" in refused.json()["error"]
        assert requests.get(f"{server.url}/health/live", timeout=30).json() == {"status": "alive"}

        versioned_model(live, "v2", seed=1)  # the first good model: the watcher serves it
        wait_for_version(server.url, "v2")
        assert wait_for_health(server.url, "ok")["model"]["version"] == "v2"
        response = predict(server.url, data)
        assert response.status_code == 200
        np.testing.assert_allclose(list(response.json()["probabilities"].values()),
                                   offline_probabilities(live, data), atol=2e-6)
        assert "Traceback" not in server.log() and "Worker failed to boot" not in server.log()
    finally:
        server.stop()
