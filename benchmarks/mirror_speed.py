"""Mirror speed: seconds the ``mirror`` stage spends sending one new pipeline state to MLflow
(a new run, its params, metrics and artifacts, the pt2 export, the registered version), as a
fresh process, the way ``dvc exp run`` starts it.

The state is this repository's (params.yaml, dvc.lock, metrics/, plots/, models/best/; run
``dvc repro`` or ``dvc pull`` first), copied to a temporary folder; each mirror sends a new
state to a warm store (the first mirror, which creates the store, is not counted), in two
cases: "new model" (the selected model's weights changed, as when an experiment retrains it)
and "same model" (only a metric changed, as when an experiment keeps the selected model,
whose logged model the mirror then reuses). ``--baseline REV`` runs the mirror code of a git
revision too, alternating with the working tree's in the same run, so load from other
processes hits both alike, and prints the ratio. ``--server`` sends to a real
``mlflow server`` on 127.0.0.1 instead of the default sqlite file, where every client call
is an HTTP round trip.

Besides wall and CPU seconds, each mirror counts its metric-history reads and its HTTP
requests: the cost that grows with the number of metrics and with the distance to the server.

usage: python benchmarks/mirror_speed.py [--repeats 3] [--baseline REV] [--server]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracking.snapshot import mirrored_files  # noqa: E402

# Runs in a fresh interpreter whose first path entry is the code under test.
CHILD = r'''
import json, resource, sys, time
started = time.perf_counter()
code, state, uri = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, code)
from pathlib import Path
import requests
from mlflow.tracking.client import MlflowClient
counts = {"metric_history_reads": 0, "http_requests": 0}
def counted(cls, name, key):
    original = getattr(cls, name)
    def wrapper(*args, **kwargs):
        counts[key] += 1
        return original(*args, **kwargs)
    setattr(cls, name, wrapper)
counted(MlflowClient, "get_metric_history", "metric_history_reads")
counted(requests.Session, "request", "http_requests")
from tracking import mirror
report = mirror.mirror_workspace(Path(state), environ={"MLFLOW_TRACKING_URI": uri} if uri else {})
assert not report.kept, report.warning()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": time.perf_counter() - started, "cpu_s": usage.ru_utime + usage.ru_stime, **counts}))
'''


def copy_state(destination: Path) -> None:
    names = mirrored_files(ROOT)
    if "models/best/model.json" not in names:
        raise SystemExit("models/best is missing: run dvc repro (or dvc pull) first.")
    for name in names:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


def checkout(rev: str, destination: Path) -> None:
    """The mirror's code (tracking/, lifecycle/) as it was at ``rev``."""
    destination.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev, "tracking", "lifecycle"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive.stdout, check=True)


def nudge_model(state: Path, amount: float) -> None:
    """New weights for models/best (one bias moved by ``amount``): a new model, as a new experiment makes."""
    import io

    import torch

    weights = state / "models/best/model.pt"
    tensors = torch.load(weights, weights_only=True)
    name = next(key for key, value in tensors.items() if key.endswith("bias"))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += amount
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    weights.write_bytes(buffer.getvalue())


def mirror_once(code: Path, state: Path, uri: str, repeat: int, new_model: bool) -> dict[str, float]:
    """Mirror a new state in a fresh process; its timings and counts. Each state changes one
    metrics file, and with ``new_model`` the model's weights too.

    The metrics file names the state folder: two code versions sending to one server must not
    send the same state, or the second would only update the first one's run.
    """
    (state / "metrics/benchmark.json").write_text(
        json.dumps({"repeat": repeat, "new_model": new_model, "state": state.name}))
    if new_model:
        nudge_model(state, 1e-3)
    result = subprocess.run([sys.executable, "-c", CHILD, str(code), str(state), uri], capture_output=True,
                            text=True, timeout=900, check=False, env={**os.environ, "PYTHONPATH": ""})
    if result.returncode != 0:
        raise SystemExit(f"the mirror failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


class Server:
    """A real mlflow server on a free 127.0.0.1 port (sqlite backend, local artifacts)."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port",
                   str(self.port), "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                   "--artifacts-destination", str(folder / "artifacts")]
        self.process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        import requests

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.5)
        self.stop()
        raise SystemExit("mlflow server did not start within 180 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="mirrors counted per code version (median shown)")
    parser.add_argument("--baseline", metavar="REV", help="also time the mirror code of this git revision")
    parser.add_argument("--server", action="store_true", help="send to a real mlflow server instead of sqlite")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="mirror-speed-"))
    server = None
    try:
        variants = {"working tree": ROOT}
        if args.baseline:
            checkout(args.baseline, scratch / "baseline")
            variants = {f"baseline {args.baseline}": scratch / "baseline", **variants}
        states, uris = {}, {}
        if args.server:
            (scratch / "server").mkdir()
            server = Server(scratch / "server")
        for index, name in enumerate(variants):
            states[name] = scratch / f"state-{index}"
            copy_state(states[name])
            uris[name] = server.uri if server else ""  # "": sqlite:///<state>/mlflow.db, the default
            mirror_once(variants[name], states[name], uris[name], repeat=-1, new_model=False)  # creates the store
        cases = {"new model": True, "same model": False}
        results = {(name, case): [] for case in cases for name in variants}
        for repeat in range(args.repeats):
            for case, new_model in cases.items():
                for name, code in variants.items():
                    results[name, case].append(mirror_once(code, states[name], uris[name], repeat, new_model))
        store = f"mlflow server at {server.uri}" if server else "sqlite store"
        print(f"mirror of one new pipeline state into a warm {store}, fresh process, median of {args.repeats}")
        print("(new model: the selected model's weights changed, as when an experiment retrains it; same model:")
        print(" only a metric changed, as when an experiment keeps the selected model)")
        print(f"{'case':<12}{'code':<24}{'wall s':>9}{'cpu s':>9}{'history reads':>15}{'http requests':>15}")
        medians = {}
        for (name, case), runs in results.items():
            medians[name, case] = m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            print(f"{case:<12}{name:<24}{m['wall_s']:>9.2f}{m['cpu_s']:>9.2f}{m['metric_history_reads']:>15.0f}"
                  f"{m['http_requests']:>15.0f}")
        if args.baseline:
            for case in cases:
                base, ours = medians[f"baseline {args.baseline}", case], medians["working tree", case]
                print(f"{case}: working tree / baseline: wall {ours['wall_s'] / base['wall_s']:.2f}, "
                      f"cpu {ours['cpu_s'] / base['cpu_s']:.2f}")
    finally:
        if server:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
