"""Production settings for the /predict service: ``gunicorn -c serving/gunicorn.conf.py``.

One command from any folder; environment variables adjust it (defaults in brackets):

    SERVE_BIND             address to listen on [127.0.0.1:8000]; put a TLS proxy in front before 0.0.0.0
    SERVE_WORKERS          worker processes, each with its own copy of the model [2]
    SERVE_THREADS          threads per worker: requests a worker answers at once, stalled ones included [32]
    SERVE_READ_TIMEOUT     seconds a request may send nothing before it gets a 408 or is closed [10]
    SERVE_REQUEST_TIMEOUT  seconds to receive a whole request, headers and body [30]
    SERVE_PIDFILE          write the master's process id here, for ``kill -HUP`` [none]
    SERVE_STATE_DIR        where the master keeps its private copy of the last model that loaded [system temp]
    SERVE_MODEL, SERVE_MAX_*, SERVE_TORCH_THREADS, SERVE_RELOAD_SECONDS: the app's, see serving/app.py

Why these: threaded workers (:mod:`serving.worker`) keep answering while slow clients are
connected, since a thread waiting on a client costs no CPU and the read and request
timeouts free it; the worker's heartbeat comes from its main loop, so gunicorn never kills
a worker because a client stalls (the sync worker did, and that client got an HTML 500).
``kill -HUP <master pid>`` starts fresh workers (new code, the model chosen now) and
retires the old ones after their requests; a promoted model is picked up without it
(SERVE_RELOAD_SECONDS).

A model that fails to load never stops the service: the master creates a private folder at
start (``on_starting``) where workers keep the last model that loaded, and a new worker (after
HUP, a crash, an OOM kill) falls back to it when the model on disk does not load; with none,
it starts anyway and answers 503 (serving/last_good.py). The master removes it on exit.
"""
import logging
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root: models/best and mlflow.db resolve there
if str(ROOT) not in sys.path:  # gunicorn reads this file before it changes to ``chdir``
    sys.path.insert(0, str(ROOT))

from serving import last_good  # noqa: E402
from serving.worker import READ_TIMEOUT, REQUEST_TIMEOUT, timeout_setting  # noqa: E402


def _positive_int(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "")
    if raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"error: environment variable {variable}={raw!r} must be a positive integer.")
    return int(raw)


wsgi_app = "serving:create_app()"
chdir = str(ROOT)
bind = [os.environ.get("SERVE_BIND") or "127.0.0.1:8000"]
workers = _positive_int("SERVE_WORKERS", 2)
worker_class = "serving.worker.DeadlineThreadWorker"
threads = _positive_int("SERVE_THREADS", 32)  # room for 16 stalled clients and 8 busy ones on ONE worker
timeout_setting(READ_TIMEOUT), timeout_setting(REQUEST_TIMEOUT)  # a bad value stops the master, naming it
timeout = 30           # heartbeat: a worker whose main loop is silent this long is restarted
graceful_timeout = 40  # after HUP or TERM, in-flight requests get this long (over the request timeout)
keepalive = 5          # seconds an idle keep-alive connection is kept; it holds no thread meanwhile
pidfile = os.environ.get("SERVE_PIDFILE") or None
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


def on_exit(server):
    folder = os.environ.pop(last_good.VARIABLE, "")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
