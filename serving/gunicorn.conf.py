"""Production settings for the /predict service: ``gunicorn -c serving/gunicorn.conf.py``, behind nginx.

One command from any folder; environment variables adjust it (:class:`serving.app.Settings`,
defaults in brackets):

    SERVE_BIND             address to listen on [127.0.0.1:8001]: serving/nginx.conf's upstream
    SERVE_WORKERS          worker processes, each with its own copy of the model [2]
    SERVE_THREADS          threads per worker: requests a worker answers at once [32]
    SERVE_PIDFILE          write the master's process id here, for ``kill -HUP`` [none]
    SERVE_STATE_DIR        where the master keeps its private copy of the last model that loaded [system temp]
    SERVE_LOG_DIR, SERVE_PREDICTION_LOG, SERVE_LOG_*, SERVE_KEEP_IMAGES: the prediction log, see serving/app.py
    PROMETHEUS_MULTIPROC_DIR   where workers keep /metrics' counters [a fresh temporary folder per master]
    SERVE_MODEL, SERVE_MAX_*, SERVE_TORCH_THREADS, SERVE_RELOAD_SECONDS: the app's, see serving/app.py

Why these: gunicorn's threaded worker (``gthread``) answers from a pool of threads and keeps
its heartbeat in its main loop, so a slow request never gets a worker killed. It does not
bound how long it waits on a client, so slow and stalled clients are nginx's job
(serving/nginx.conf buffers each whole request before gunicorn sees it; measurements in
docs/serving.md): expose nginx, never this port. ``kill -HUP <master pid>`` starts fresh
workers (new code, the model chosen now) and retires the old ones after their requests; a
promoted model is picked up without it (SERVE_RELOAD_SECONDS).

A model that fails to load never stops the service: the master creates a private folder at
start (``on_starting``) where workers keep the last model that loaded, and a new worker (after
HUP, a crash, an OOM kill) falls back to it when the model on disk does not load; with none,
it starts anyway and answers 503 (serving/last_good.py). The master removes it on exit.
"""
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root: models/best and mlflow.db resolve there
if str(ROOT) not in sys.path:  # gunicorn reads this file before it changes to ``chdir``
    sys.path.insert(0, str(ROOT))

# /metrics sums every worker's counters (prometheus-client's multiprocess mode): the folder must be
# named before anything imports prometheus_client, here in the master, so the workers inherit it.
_OWN_METRICS_DIR = "" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else tempfile.mkdtemp(prefix="serve-metrics-")
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", _OWN_METRICS_DIR)

from lifecycle.core.errors import UserError  # noqa: E402
from serving import last_good, metrics  # noqa: E402
from serving.app import load_settings  # noqa: E402

try:
    settings = load_settings()  # a bad value stops the master, naming its variable
except UserError as error:
    raise SystemExit(f"error: {error}") from None

wsgi_app = "serving:create_app()"
chdir = str(ROOT)
bind = [settings.bind]
workers = settings.workers
worker_class = "gthread"
threads = settings.threads
timeout = 30           # heartbeat: a worker whose main loop is silent this long is restarted
graceful_timeout = 40  # after HUP or TERM, in-flight requests get this long
keepalive = 5          # seconds an idle keep-alive connection is kept
pidfile = settings.pidfile or None
control_socket_disable = True  # no shared $HOME/.gunicorn/gunicorn.ctl between several services
preload_app = False    # each worker loads the model itself, after the fork: HUP then loads the current one


def post_fork(server, worker):
    """Send the app's log lines (which model, why, reloads) where gunicorn's own go."""
    serving_log = logging.getLogger("serving")
    serving_log.handlers = list(server.log.error_log.handlers)
    serving_log.setLevel(logging.INFO)
    serving_log.propagate = False


def on_starting(server):
    """Once per master (not on HUP): a fresh private folder for the last model that loaded, named to the workers."""
    os.environ[last_good.VARIABLE] = str(last_good.create_private_folder())


def child_exit(server, worker):
    """A worker that exited (HUP, crash) stops counting in /metrics' live gauges."""
    metrics.worker_exited(worker.pid)


def on_exit(server):
    folder = os.environ.pop(last_good.VARIABLE, "")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
    if _OWN_METRICS_DIR:  # never a folder the user named
        shutil.rmtree(_OWN_METRICS_DIR, ignore_errors=True)
