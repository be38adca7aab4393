"""For the tests that start a real server (gunicorn, nginx, mlflow, a browser's driver): a free
port, waiting until it answers, and stopping it with every process it started."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process_group(process: subprocess.Popen, seconds: float = 60) -> None:
    """Stop a server started with ``start_new_session=True`` and the workers it started (its process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=seconds)


def wait_until_up(process: subprocess.Popen, url: str, seconds: float = 120, log: Path | None = None) -> None:
    """Return once ``url`` answers 200; fail with the server's output (``log``, else its stderr pipe once it
    has exited) if it exits first or does not answer within ``seconds``. The caller stops it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text()[-3000:] if log else process.stderr.read() if process.stderr else ""
            raise AssertionError(f"{url}: {process.args} exited with {process.returncode}:\n{output}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or a worker still loading the model
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {seconds} s:\n{log.read_text()[-3000:] if log else ''}")
