"""The service's metrics, served as Prometheus text at ``GET /metrics`` (prometheus-client).

Under gunicorn each worker is a process with its own counters: prometheus-client's
multiprocess mode adds them up. The gunicorn config gives every server start a fresh, private
``PROMETHEUS_MULTIPROC_DIR`` before any worker imports this module, and marks a worker's
files dead when it exits (:func:`worker_exited`). Without that variable (the Flask development
server, tests in one process) the process's own registry is served.

Names follow Prometheus' conventions: ``_total`` for counters (the client adds it), base
units (seconds), one metric per meaning with labels for its dimensions.
"""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "cats_vs_dogs_"

REQUESTS = Counter(f"{PREFIX}requests", "HTTP requests answered, by route and status code", ["route", "status"])
LATENCY = Histogram(f"{PREFIX}request_duration_seconds", "Time to answer a request, by route", ["route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
IMAGES = Histogram(f"{PREFIX}images_per_request", "Images in one /predict request",
                   buckets=(1, 2, 4, 8, 16, 32, 64, 128))
PREDICTIONS = Counter(f"{PREFIX}predictions", "Images answered, by predicted class", ["label"])
MODEL = Gauge(f"{PREFIX}model_info", "The model a worker serves (1), by name, version and source",
              ["name", "version", "source"], multiprocess_mode="livemax")
RELOAD_FAILURES = Counter(f"{PREFIX}model_reload_failures", "Model loads that failed (the last good one kept serving)")
LOG_FAILURES = Counter(f"{PREFIX}prediction_log_failures", "Prediction-log records dropped (a refused write, a full queue)")

_served: tuple[str, str, str] | None = None


def serving(name: str, version: str, source: str) -> None:
    """Record that this worker now serves the model (name, version, source); the previous one reads 0."""
    global _served
    labels = (name, version, source)
    if labels == _served:
        return
    if _served is not None:
        MODEL.labels(*_served).set(0)
    MODEL.labels(*labels).set(1)
    _served = labels


def exposition() -> tuple[bytes, str]:
    """The text ``/metrics`` answers, and its content type: every worker's metrics when under gunicorn."""
    if os.environ.get(MULTIPROCESS_VARIABLE):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """gunicorn's ``child_exit``: a dead worker's live gauges stop counting."""
    if os.environ.get(MULTIPROCESS_VARIABLE):
        multiprocess.mark_process_dead(pid)
