"""Which MLflow store the project means, and the names it uses there: the one place that decides.

in: ``MLFLOW_TRACKING_URI`` (a team server), else the repository. out: the store's URI
(:func:`tracking_uri`): the variable, else ``sqlite:///<repo>/mlflow.db`` at the real
repository root, also when DVC runs an experiment in a temporary copy under
``<repo>/.dvc/tmp/exps/`` (:func:`tracking.provenance.real_root`). The mirror writes there,
the promotion gate and the service (``serving/``) read there: one answer for all three.

Also here: the experiment and registered-model names and aliases, the store's artifact
folder, and pointing MLflow's fluent API at a store for a while (:func:`global_store`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from lifecycle.core import paths
from tracking.provenance import real_root

EXPERIMENT = "cats-vs-dogs"        # the MLflow experiment of every pipeline run (MLFLOW_EXPERIMENT_NAME overrides)
REGISTERED_MODEL = "cats-vs-dogs"  # the Model Registry name of the selected model
CANDIDATE = "candidate"            # moved by the mirror to the model of the newest mirrored pipeline run
CHAMPION = "champion"              # moved only by python -m tracking.promote and tracking.rollback; served
HEALTH_TIMEOUT_S = 5.0             # how long a tracking server has to answer /health

# Bounded retries, no progress bars or URLs on stdout, and no network call but to the tracking
# store (MLflow's usage telemetry would fetch a config from config.mlflow-telemetry.io on every
# logged model; DVC's analytics are off too), unless the user chose otherwise.
_MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def tracking_uri(root: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``MLFLOW_TRACKING_URI``, else the sqlite store ``mlflow.db`` at the real repository root."""
    environ = os.environ if environ is None else environ
    uri = environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or "sqlite:///" + str(real_root(root, environ) / paths.MLFLOW_DB)


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store; None for any other store."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def existing_store(root: Path | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """:func:`tracking_uri` if there is a store there: a set ``MLFLOW_TRACKING_URI`` always is; the
    default sqlite file only once the mirror has created it (None before)."""
    environ = os.environ if environ is None else environ
    uri = tracking_uri(root, environ)
    return uri if environ.get("MLFLOW_TRACKING_URI", "").strip() or sqlite_file(uri).is_file() else None


def experiment_name(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or EXPERIMENT


def local_artifact_location(uri: str) -> str | None:
    """Artifacts of a sqlite store go to ``mlartifacts/`` beside the database file.

    (MLflow's own default is ``./mlruns`` in whatever folder the process runs in.)
    """
    database = sqlite_file(uri)
    return None if database is None else (database.parent / paths.MLFLOW_ARTIFACTS).resolve().as_uri()


def display_uri(uri: str) -> str:
    """The URI without credentials, for messages."""
    return re.sub(r"//[^/@]*@", "//", uri)


def unreachable(uri: str) -> str | None:
    """Why a tracking server does not answer, or None (only http(s) stores are checked)."""
    if not uri.startswith(("http://", "https://")):
        return None
    import requests

    try:
        answer = requests.get(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S)
    except requests.Timeout:
        return f"no answer within {HEALTH_TIMEOUT_S:g} s"
    except requests.ConnectionError as error:
        return "connection refused" if "refused" in str(error).lower() else "cannot connect"
    except requests.RequestException as error:
        return type(error).__name__
    return f"server error {answer.status_code}" if answer.status_code >= 500 else None


@contextlib.contextmanager
def mlflow_settings() -> Iterator[None]:
    """Bounded retries and no progress bars while sending (the user's own settings win)."""
    added = [name for name in _MLFLOW_ENV_DEFAULTS if name not in os.environ]
    os.environ.update({name: _MLFLOW_ENV_DEFAULTS[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def quiet_mlflow() -> None:
    """MLflow's INFO lines (database migrations, registrations) would bury the command's output."""
    for name in ("mlflow", "alembic", "torch._export", "torch.export"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def global_store(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking and registry URIs at ``uri`` for a while.

    The fluent API (``log_model``) and the registry resolve ``models:/`` through them. Public
    interfaces only: ``mlflow.set_tracking_uri`` (which also exports ``MLFLOW_TRACKING_URI``)
    and the documented variable ``MLFLOW_REGISTRY_URI``. Both variables and the tracking URI
    are restored exactly afterwards, so nothing leaks into the caller's process or its children.
    """
    import mlflow

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {name: os.environ.get(name) for name in names}
    saved_tracking = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    os.environ["MLFLOW_REGISTRY_URI"] = uri
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
