"""Bounded load test, on loopback only: this service (nginx + gunicorn) vs `mlflow models serve` (twice), same model.

    python benchmarks/load_test.py [--model models/best | --demo] [--requests 2000] [--concurrency 8]
                                   [--stalled 16] [--baseline-root DIR] [--rounds 1]

Starts the three servers on free 127.0.0.1 ports with the same number of workers and torch
threads, checks that they give the same answers for the sample images, then sends each one
``--requests`` requests from ``--concurrency`` client threads (one at a time, so the servers
never compete) and prints p50/p99 latency, requests per second and errors side by side. It
stops by itself after the requests or ``--max-seconds`` per server, whichever comes first,
and exits 1 if any request to this service or MLflow failed.

The service runs as deployed (``gunicorn -c serving/gunicorn.conf.py`` behind nginx with
serving/nginx.conf) and is measured twice: clean, then again while ``--stalled`` connections
(default 16) sit open having sent headers and part of a multipart body
(benchmarks/stalled_clients.py; one the server closes is replaced at once).
``--baseline-root DIR`` also measures another checkout's production command, ``gunicorn -c
DIR/serving/gunicorn.conf.py`` with no proxy (an older commit: ``git archive <commit> | tar -x
-C DIR``), both ways, as the baseline; its errors are reported, not failed on. ``--rounds N``
repeats the whole sequence N times, the servers interleaved, for a machine whose load varies.

What each server does per request differs, on purpose, as a client would see it:
- Flask (this service): receives the image file (multipart), decodes, resizes and
  normalises it on the server (lifecycle.core.images), runs the model, answers label and
  probabilities.
- MLflow (tensor JSON, the pt2 model): receives the already preprocessed float32
  (1, 3, S, S) tensor as JSON (``{"inputs": ...}``; the client did the preprocessing, outside
  the timing), runs the model, answers logits.
- MLflow (image pyfunc, like for like): the image-bytes pyfunc the mirror also logs
  (tracking/pyfunc.py) receives the same JPEG bytes as this service, base64 in JSON
  (``{"dataframe_split": ...}``: MLflow's scoring server takes JSON, CSV or Parquet, not
  multipart), decodes, resizes and normalises them with the service's own code
  (lifecycle.inference.Predictor), answers label and probabilities.

``--demo`` benchmarks an untrained model of the seed's architecture (seed_cnn, the pipeline's
image size) when models/best does not exist yet: latency does not depend on the weights.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stalled_clients import StalledClients, start_nginx
from lifecycle.core import paths
from lifecycle.core.images import ImageDecodeError, load_array
from lifecycle.models import (
    ModelSpec,
    SeedCNN,
    load_model,
    save_model,
    to_model_input,
)

HOST = "127.0.0.1"  # loopback only, never another machine


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=paths.BEST_MODEL, help="model folder (default models/best)")
    parser.add_argument("--demo", action="store_true", help="use an untrained seed_cnn when --model does not exist")
    parser.add_argument("--requests", type=int, default=2000, help="requests per server")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes, for both servers")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads per worker, for both servers")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop a server's run after this long")
    parser.add_argument("--images", type=Path, default=paths.RAW_IMAGES, help="sample images (default data/raw/images)")
    parser.add_argument("--stalled", type=int, default=16, help="stalled connections held open in the second run "
                        "against the service (0: no such run)")
    parser.add_argument("--baseline-root", type=Path, help="also measure gunicorn -c DIR/serving/gunicorn.conf.py "
                        "(another checkout, no proxy), clean and with the stalled connections")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every server's runs this many times, interleaved")
    parser.add_argument("--no-mlflow", action="store_true", help="measure only this service")
    parser.add_argument("--log-off-too", action="store_true",
                        help="also measure the service with its prediction log off (SERVE_PREDICTION_LOG=0), interleaved")
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    if min(args.requests, args.concurrency, args.workers, args.rounds) < 1 or args.stalled < 0:
        parser.error("--requests, --concurrency, --workers and --rounds must be positive, --stalled not negative")
    return args


def demo_model(folder: Path) -> Path:
    import yaml

    size = yaml.safe_load(paths.PARAMS.read_text())["featurize"]["image_size"]
    torch.manual_seed(0)
    spec = ModelSpec(architecture="seed_cnn", classes=["cat", "dog"], image_size=size, arguments={"channels": [32]},
                     info={"name": "demo-untrained-seed-cnn", "stage": "demo"})
    save_model(SeedCNN(image_size=size, channels=(32,)), spec, folder)
    return folder


def sample_images(folder: Path, size: int, count: int = 16) -> list[bytes]:
    """Up to ``count`` readable images from ``folder``; random JPEGs if there are none."""
    found: list[bytes] = []
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if len(found) == count:
            break
        try:
            load_array(path, size)
            found.append(path.read_bytes())
        except ImageDecodeError:
            continue
    if not found:
        from PIL import Image

        rng = np.random.default_rng(0)
        for _ in range(count):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (120, 120, 3), dtype=np.uint8)).save(buffer, "JPEG")
            found.append(buffer.getvalue())
    return found


def save_mlflow_model(model_dir: Path, destination: Path) -> None:
    """The model as the mirror logs it: float32 (-1, 3, S, S) in, logits out, model.json as an extra file."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    model, spec = load_model(model_dir)
    example = np.zeros((2, 3, spec.image_size, spec.image_size), dtype=np.float32)
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    mlflow.pytorch.save_model(model, str(destination), signature=signature, input_example=example,
                              extra_files=[str(model_dir / "model.json")])


IMAGE_PYFUNC = "mlflow models serve (image pyfunc)"  # the like-for-like server
TENSOR_MLFLOW = "mlflow models serve"                # the tensor-JSON server, as before


def save_image_pyfunc(model_dir: Path, destination: Path) -> None:
    """The model as the mirror's ``image-model``: image bytes in, the service's answer out."""
    import mlflow

    from tracking.pyfunc import model_arguments

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # MLflow copies the artifacts with a bar
    mlflow.pyfunc.save_model(str(destination), **model_arguments(model_dir))


def image_pyfunc_bodies(images: list[bytes]) -> list[str]:
    """One request body per image: its bytes, base64 in MLflow's ``dataframe_split`` JSON."""
    from tracking.image_model import IMAGE_COLUMN

    return [json.dumps({"dataframe_split": {"columns": [IMAGE_COLUMN], "data": [[base64.b64encode(data).decode()]]}})
            for data in images]


def image_pyfunc_sender(port: int, bodies: list[str], expected: np.ndarray):
    """``send(session, i)`` for the image pyfunc: the i-th JPEG, checked against the model's answer."""
    def send(session: requests.Session, i: int) -> bool:
        k = i % len(bodies)
        response = session.post(f"http://{HOST}:{port}/invocations", data=bodies[k],
                                headers={"Content-Type": "application/json"}, timeout=60)
        return response.status_code == 200 and response.json()["predictions"][0]["prediction"] == int(np.argmax(expected[k]))
    return send


def print_comparisons(results: dict) -> None:
    """The service against each MLflow server: throughput and median latency ratios."""
    flask = results.get(SERVICE) or results[f"{SERVICE} (round 1)"]
    for name, what in ((TENSOR_MLFLOW, "tensor JSON: MLflow is sent tensors the client preprocessed"),
                       (IMAGE_PYFUNC, "like for like: both are sent the same JPEG bytes")):
        other = results.get(name) or results.get(f"{name} (round 1)")
        if other:
            print(f"flask/{name} ({what}): {flask['requests_per_second'] / other['requests_per_second']:.2f}x the "
                  f"throughput, {flask['p50_ms'] / other['p50_ms']:.2f}x the p50 latency")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict[str, str], health: str, log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    return wait_healthy(process, health, log)


def start_service(root: Path, env: dict[str, str], port: int, scratch: Path, behind_nginx: bool) -> list[subprocess.Popen]:
    """``gunicorn -c <root>/serving/gunicorn.conf.py``, behind nginx listening on ``port``, or on ``port`` itself."""
    gunicorn_port = free_port() if behind_nginx else port
    gunicorn = start([sys.executable, "-m", "gunicorn", "-c", str(root / "serving" / "gunicorn.conf.py")],
                     dict(env, SERVE_BIND=f"{HOST}:{gunicorn_port}"), f"http://{HOST}:{gunicorn_port}/health",
                     scratch / f"gunicorn-{gunicorn_port}.log", cwd=root)
    if not behind_nginx:
        return [gunicorn]
    log = scratch / f"nginx-{port}.log"
    nginx = start_nginx(scratch / f"nginx-{port}", port, gunicorn_port, open(log, "w"))
    return [wait_healthy(nginx, f"http://{HOST}:{port}/health", log), gunicorn]


def wait_healthy(process: subprocess.Popen, health: str, log: Path, timeout: float = 300) -> subprocess.Popen:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args[0:4]} exited {process.returncode}; see {log}")
        try:
            if requests.get(health, timeout=2).status_code == 200:
                return process
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop(process)
    raise SystemExit(f"{health} did not answer within {timeout}s; see {log}")


def stop(process: subprocess.Popen) -> None:
    """Stop a server and the workers it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def load(send, total: int, concurrency: int, max_seconds: float) -> dict:
    """``total`` calls of ``send(session, i)`` from ``concurrency`` threads; latencies and errors."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = 0
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        nonlocal issued
        session = requests.Session()
        while True:
            with lock:
                if issued >= total or time.monotonic() > deadline:
                    return
                i = issued
                issued += 1
            began = time.perf_counter()
            try:
                ok = send(session, i)
                failure = None if ok else "wrong answer"
            except requests.RequestException as error:
                failure = type(error).__name__
            elapsed = time.perf_counter() - began
            with lock:
                latencies.append(elapsed)
                if failure:
                    errors.append(failure)

    began = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": len(errors), "seconds": round(wall, 2),
            "requests_per_second": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "error_kinds": sorted(set(errors))}


LOG_OFF = "this service, prediction log off"
SERVICE = "nginx + gunicorn"
BASELINE = "baseline: gunicorn -c DIR/serving/gunicorn.conf.py"
STALLED_RUN_CLIENT_TIMEOUT = 10.0  # seconds a client waits for an answer in the runs with stalled connections
STALLED_RUN_MAX_SECONDS = 60.0     # a server that stalled clients block is given this long


def load_with_stalled(send, port: int, args: argparse.Namespace) -> dict:
    """The same load while ``args.stalled`` stalled connections are held open against ``port``."""
    with StalledClients(HOST, port, args.stalled) as stalled:
        time.sleep(1.0)  # the server has accepted them and is waiting on their bodies
        result = load(send, args.requests, args.concurrency, min(args.max_seconds, STALLED_RUN_MAX_SECONDS))
        result["load_average_after"] = round(os.getloadavg()[0], 2)
    answers: dict[str, int] = {}
    for status, _ in stalled.closed:
        answers[status or "closed without an answer"] = answers.get(status or "closed without an answer", 0) + 1
    held = sorted(seconds for _, seconds in stalled.closed)
    result["stalled"] = {"held_open": args.stalled, "closed_by_server": len(stalled.closed), "answers": answers,
                         "median_seconds_until_closed": round(held[len(held) // 2], 1) if held else None,
                         "failed_to_open": len(stalled.open_errors)}
    return result


def main() -> None:
    args = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="load-test-"))
    model_dir = args.model
    if not (model_dir / "model.json").is_file():
        if not args.demo:
            raise SystemExit(f"error: {model_dir} has no model.json; run dvc repro first, or pass --demo")
        model_dir = demo_model(scratch / "demo-model")
    model, spec = load_model(model_dir)
    images = sample_images(args.images, spec.image_size)
    arrays = np.stack([load_array(data, spec.image_size) for data in images])
    tensors = to_model_input(arrays, spec.mean, spec.std)
    with torch.no_grad():
        expected = torch.softmax(model(tensors), dim=1).numpy()
    bodies = [json.dumps({"inputs": tensors[i: i + 1].numpy().tolist()}) for i in range(len(images))]

    env = dict(os.environ, OMP_NUM_THREADS=str(args.torch_threads), MKL_NUM_THREADS=str(args.torch_threads),
               SERVE_TORCH_THREADS=str(args.torch_threads), SERVE_MODEL=str(model_dir.resolve()),
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")  # mlflow execs uvicorn
    flask_port, baseline_port, mlflow_port, pyfunc_port = free_port(), free_port(), free_port(), free_port()
    mlflow_dir, pyfunc_dir = scratch / "mlflow-model", scratch / "image-pyfunc"
    print(f"model {spec.architecture} {spec.image_size}px from {model_dir}; {len(images)} sample images; "
          f"{args.requests} requests x {args.concurrency} clients per server; {args.workers} workers, "
          f"{args.torch_threads} torch thread(s) each", file=sys.stderr)
    if not args.no_mlflow:
        save_mlflow_model(model_dir, mlflow_dir)
        save_image_pyfunc(model_dir, pyfunc_dir)

    env.update(SERVE_WORKERS=str(args.workers), SERVE_LOG_DIR=str(scratch / "served"))  # never the repository's log

    def mlflow_serve(folder: Path, port: int):
        command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(folder), "--env-manager", "local",
                   "-h", HOST, "-p", str(port), "-w", str(args.workers)]
        return lambda: [start(command, env, f"http://{HOST}:{port}/ping", scratch / f"mlflow-{port}.log")]

    servers = {  # name: (start it, returning its processes; port)
        SERVICE: (lambda: start_service(ROOT, env, flask_port, scratch, behind_nginx=True), flask_port),
        TENSOR_MLFLOW: (mlflow_serve(mlflow_dir, mlflow_port), mlflow_port),
        IMAGE_PYFUNC: (mlflow_serve(pyfunc_dir, pyfunc_port), pyfunc_port),
    }
    if args.log_off_too:
        log_off_port = free_port()
        servers[LOG_OFF] = (lambda: start_service(ROOT, dict(env, SERVE_PREDICTION_LOG="0"), log_off_port, scratch,
                                                  behind_nginx=True), log_off_port)
    if args.no_mlflow:
        del servers[TENSOR_MLFLOW], servers[IMAGE_PYFUNC]
    if args.baseline_root:
        root = args.baseline_root.resolve()
        servers[BASELINE] = (lambda: start_service(root, env, baseline_port, scratch, behind_nginx=False), baseline_port)

    def flask_sender(port: int, timeout: float):
        def send_flask(session: requests.Session, i: int) -> bool:
            k = i % len(images)
            response = session.post(f"http://{HOST}:{port}/predict", files={"image": (f"{k}.jpg", images[k])},
                                    timeout=timeout)
            return response.status_code == 200 and response.json()["prediction"] == int(np.argmax(expected[k]))
        return send_flask

    def send_mlflow(session: requests.Session, i: int) -> bool:
        k = i % len(images)
        response = session.post(f"http://{HOST}:{mlflow_port}/invocations", data=bodies[k],
                                headers={"Content-Type": "application/json"}, timeout=60)
        return response.status_code == 200 and int(np.argmax(response.json()["predictions"][0])) == int(np.argmax(expected[k]))

    results = {}
    send_pyfunc = image_pyfunc_sender(pyfunc_port, image_pyfunc_bodies(images), expected)
    for round_ in range(1, args.rounds + 1):
        for name, (launch, port) in servers.items():
            label = f"{name} (round {round_})" if args.rounds > 1 else name
            send = {TENSOR_MLFLOW: send_mlflow, IMAGE_PYFUNC: send_pyfunc}.get(name) or flask_sender(port, timeout=60)
            processes = launch()
            try:
                for i in range(len(images)):  # warm up, and check both serve the same model
                    assert send(requests.Session(), i), f"{name} answered image {i} differently from the model"
                results[label] = load(send, args.requests, args.concurrency, args.max_seconds)
                results[label]["load_average_after"] = round(os.getloadavg()[0], 2)  # other work on the machine skews figures
                if args.stalled and not name.startswith("mlflow"):
                    # A shorter client timeout: a request the server cannot answer shows up as an error, not a hang.
                    results[f"{label}, {args.stalled} stalled clients"] = load_with_stalled(
                        flask_sender(port, timeout=STALLED_RUN_CLIENT_TIMEOUT), port, args)
            finally:
                for process in processes:
                    stop(process)

    print("\n| server | requests | errors | req/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['requests']} | {r['errors']} | {r['requests_per_second']} | {r['p50_ms']} | {r['p99_ms']} |")
    for name, r in results.items():
        if "stalled" in r:
            print(f"{name}: {r['stalled']}")
    print()
    print_comparisons(results)
    if args.log_off_too:
        on = [r["requests_per_second"] for n, r in results.items() if n.startswith(SERVICE) and "stalled" not in n]
        off = [r["requests_per_second"] for n, r in results.items() if n.startswith(LOG_OFF) and "stalled" not in n]
        ratio = float(np.median(on)) / float(np.median(off))
        print(f"prediction log on / off, median req/s: {np.median(on):.1f} / {np.median(off):.1f} = {ratio:.3f}")
    print("1-minute load average after each run: " + ", ".join(
        f"{name} {r['load_average_after']}" for name, r in results.items()) + f" ({os.cpu_count()} CPUs)")
    if args.output:
        args.output.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                           "results": results}, indent=2) + "\n")
    if any(r["errors"] for name, r in results.items() if not name.startswith(BASELINE)):
        raise SystemExit(f"errors: {({n: r['error_kinds'] for n, r in results.items()})}; server logs in {scratch}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
