"""Tracking: mirror every pipeline state into MLflow, losslessly and idempotently.

DVC's files are the source of truth; MLflow mirrors them so that runs can be compared in
``mlflow ui`` and the selected model deployed from the Model Registry. This is the only
module that writes to MLflow.

in:  a pipeline state: ``params.yaml``, ``dvc.lock``, ``metrics/**``, ``plots/**`` and
     ``models/best/`` of the workspace (the ``mirror`` stage) or of any git revision or DVC
     experiment (backfill)
out: one MLflow run per pipeline state, in the experiment ``cats-vs-dogs``, holding
     - params: every key of params.yaml, flattened with dots (``seed``, ``augment.hflip``);
     - metrics: every number in metrics/, named ``<file under metrics/ without extension>/<key.path>``
       (``split/train.images``); DVCLive curves (``metrics/<d>/plots/metrics/<name>.tsv``) as
       stepped metrics ``<d>/<name>``; lists of numbers or of records as stepped metrics;
     - artifacts: params.yaml, dvc.lock, metrics/, plots/ (every file, byte for byte);
     - the selected model (models/best), logged with ``mlflow.pytorch.log_model`` as ``model``
       (torch.export "pt2" format: no pickle), sidecar as ``extra_files/model.json``,
       registered as ``cats-vs-dogs`` with the alias ``candidate`` on the newest pipeline run;
     - tags: ``pipeline.state``, ``git.commit``, ``git.branch``, ``git.dirty``,
       ``dvc.exp_name`` (DVC_EXP_NAME), ``dvc.baseline_rev``, ``mirror.source``.

Identity: ``pipeline.state`` is a sha256 of the flattened params and of every file under
metrics/, plots/ and models/best/ -- the content of exactly what the ``mirror`` stage
depends on, so the stage, a later backfill of the commit and a backfill of the DVC
experiment all compute the same id. (The bytes of dvc.lock cannot be the id: DVC writes the
mirror stage's own lock entry after the stage ran.) Mirroring a state again updates its run:
tags are refreshed, only missing params and metric points are logged, artifacts are
rewritten, and the model is logged and registered once.

Where: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` with artifacts in
``mlartifacts/``, both at the real repository root -- also when DVC runs an experiment in a
temporary copy under ``.dvc/tmp/exps`` (see :func:`real_root`).

Never fails the pipeline: each mirror is first written to the spool ``.mlflow-spool/`` at the
real root, then sent; whatever cannot be sent stays there, with one warning, and is sent by
the next mirror or by ``python -m stages.mirror --flush``.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from lifecycle import paths
from lifecycle.errors import UserError

EXPERIMENT = "cats-vs-dogs"        # the MLflow experiment of every pipeline run (MLFLOW_EXPERIMENT_NAME overrides)
REGISTERED_MODEL = "cats-vs-dogs"  # the Model Registry name of the selected model
ALIAS = "candidate"                # moved to the model of the newest mirrored pipeline run
MODEL_NAME = "model"               # the logged model's name in its run

TAG_STATE = "pipeline.state"
TAG_COMMIT = "git.commit"
TAG_BRANCH = "git.branch"
TAG_DIRTY = "git.dirty"
TAG_EXP_NAME = "dvc.exp_name"
TAG_BASELINE = "dvc.baseline_rev"
TAG_SOURCE = "mirror.source"

EXAMPLE_IMAGES = 2        # > 1, so that torch.export keeps the batch dimension dynamic
HEALTH_TIMEOUT_S = 5.0    # how long a tracking server has to answer /health before we spool
LOCK_WAIT_S = 300.0       # how long a mirror waits for another one (queued experiments) to finish sending

# Bounded retries, and no progress bars or URLs on stdout, unless the user chose otherwise.
_MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
_BATCH_PARAMS = 100    # MLflow's limits per log_batch call
_BATCH_METRICS = 1000
_MAX_KEY = 250
_MAX_PARAM_VALUE = 6000
_STEP_COLUMNS = ("step", "epoch")


# ----------------------------------------------------------------------------- where


def real_root(root: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The repository the user works in, also when DVC runs the pipeline in a temporary copy.

    Queued and ``--temp`` experiments run in ``<repo>/.dvc/tmp/exps/<tmpdir>``, a fresh
    ``git init`` that DVC fills by pushing commits into it: its git common dir is its own, so
    git cannot lead back to ``<repo>``. DVC says where it is in ``DVC_ROOT`` (the parent repo
    for temporary runs); the folder layout says the same when the variable is missing.
    """
    root = Path(root or paths.ROOT).resolve()
    environ = os.environ if environ is None else environ
    dvc_root = environ.get("DVC_ROOT")
    if dvc_root:
        parent = Path(dvc_root).resolve()
        if parent != root and (parent / ".dvc").is_dir() and root.is_relative_to(parent / ".dvc"):
            return parent
    parts = root.parts
    for index in range(1, len(parts) - 1):
        if parts[index] == ".dvc" and parts[index + 1] == "tmp":
            return Path(*parts[:index])
    return root


def tracking_uri(root: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``MLFLOW_TRACKING_URI``, else the sqlite store ``mlflow.db`` at the real repository root."""
    environ = os.environ if environ is None else environ
    uri = environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or "sqlite:///" + str(real_root(root, environ) / paths.MLFLOW_DB)


def experiment_name(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or EXPERIMENT


def spool_dir(root: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    return real_root(root, environ) / paths.MLFLOW_SPOOL


def local_artifact_location(uri: str) -> str | None:
    """Artifacts of a sqlite store go to ``mlartifacts/`` beside the database file.

    (MLflow's own default is ``./mlruns`` in whatever folder the process runs in.)
    """
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri[len("sqlite:///"):])
    return (database.parent / paths.MLFLOW_ARTIFACTS).resolve().as_uri()


def display_uri(uri: str) -> str:
    """The URI without credentials, for messages."""
    return re.sub(r"//[^/@]*@", "//", uri)


# ----------------------------------------------------------------------------- what


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A pipeline state as MLflow will hold it."""

    params: dict[str, str]                             # flattened key -> value text
    metrics: dict[str, list[tuple[int, float]]]       # metric key -> (step, value) points
    artifacts: list[str]                               # relative paths of files logged as artifacts
    has_model: bool                                    # models/best/model.json is there
    state: str                                         # the pipeline-state id


def mirrored_files(base: Path) -> list[str]:
    """Relative paths of every file of a pipeline state under ``base`` (hidden files skipped)."""
    base = Path(base)
    found = [name for name in paths.MIRRORED_FILES if (base / name).is_file()]
    for folder in paths.MIRRORED_FOLDERS:
        for path in sorted((base / folder).rglob("*")):
            relative = path.relative_to(base)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                found.append(relative.as_posix())
    return sorted(found)


def param_text(value: Any) -> str:
    """A params.yaml value as MLflow's param text: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def flatten_params(document: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": "0.1"}``; lists and empty mappings are leaves."""
    flat: dict[str, str] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[mlflow_key(name)] = param_text(value)[:_MAX_PARAM_VALUE]
    return flat


def read_params(base: Path) -> dict[str, str]:
    path = Path(base) / "params.yaml"
    if not path.is_file():
        return {}
    document = yaml.safe_load(path.read_text()) or {}
    if not isinstance(document, Mapping):
        raise UserError(f"{path} must be a mapping of keys to values.")
    return flatten_params(document)


def mlflow_key(name: str) -> str:
    """``name`` as a valid MLflow key: characters MLflow refuses become ``_``, no empty or dot segments."""
    name = re.sub(r"[^\w./\- :]", "_", name)
    segments = ["_" if segment in (".", "..") else segment for segment in name.split("/") if segment]
    return "/".join(segments)[:_MAX_KEY]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _numbers(value: Any, key: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], float]]:
    """Every number in a nested mapping, with its key path."""
    if isinstance(value, Mapping):
        for child_key, child in value.items():
            yield from _numbers(child, (*key, str(child_key)))
    elif isinstance(value, (bool, int, float)):
        yield key, float(value)


def _join(file_part: str, key: tuple[str, ...]) -> str:
    return mlflow_key(f"{file_part}/{'.'.join(key)}" if key else file_part)


def _step_of(record: Mapping[str, Any], index: int) -> tuple[int, str | None]:
    for column in _STEP_COLUMNS:
        value = _number(record.get(column))
        if value is not None and value == int(value):
            return int(value), column
    return index, None


def document_metrics(document: Any, file_part: str) -> dict[str, list[tuple[int, float]]]:
    """Metrics of a JSON/YAML metrics file: numbers at step 0, lists of numbers or records as curves."""
    series: dict[str, list[tuple[int, float]]] = {}

    def visit(value: Any, key: tuple[str, ...]) -> None:
        if isinstance(value, Mapping):
            for child_key, child in value.items():
                visit(child, (*key, str(child_key)))
        elif isinstance(value, (bool, int, float)):
            series[_join(file_part, key)] = [(0, float(value))]
        elif isinstance(value, list) and value and all(isinstance(v, (bool, int, float)) for v in value):
            series[_join(file_part, key)] = [(index, float(v)) for index, v in enumerate(value)]
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for index, record in enumerate(value):
                step, step_column = _step_of(record, index)
                for field, number in _numbers({k: v for k, v in record.items() if k != step_column}):
                    series.setdefault(_join(file_part, (*key, *field)), []).append((step, number))

    visit(document, ())
    return series


def table_metrics(path: Path, file_part: str) -> dict[str, list[tuple[int, float]]]:
    """Curves of a TSV/CSV with a ``step`` (or ``epoch``) column, as DVCLive writes them.

    DVCLive's ``<d>/plots/metrics/val/loss.tsv`` (columns ``step``, ``loss``) becomes ``<d>/val/loss``;
    another table's columns become ``<file>/<column>``. Tables without a step column are
    artifacts only.
    """
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ",")
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    step_column = next((column for column in _STEP_COLUMNS if column in columns), None)
    if step_column is None:
        return {}
    file_part = re.sub(r"(^|/)plots/metrics/", r"\1", file_part)
    values = [column for column in columns if column not in (step_column, "timestamp")]
    series: dict[str, list[tuple[int, float]]] = {}
    for column in values:
        name = mlflow_key(file_part if values == [Path(file_part).name] else f"{file_part}/{column}")
        for index, row in enumerate(rows):
            value = _number(row.get(column))
            step = _number(row.get(step_column))
            if value is not None:
                series.setdefault(name, []).append((int(step) if step is not None else index, value))
    return series


def read_metrics(base: Path, files: list[str]) -> dict[str, list[tuple[int, float]]]:
    """Every metric of the files under metrics/ (see the module docstring for the names)."""
    metrics: dict[str, list[tuple[int, float]]] = {}
    for name in files:
        if not name.startswith("metrics/"):
            continue
        path = Path(base) / name
        file_part = str(Path(name).relative_to("metrics").with_suffix("").as_posix())
        if path.suffix == ".json":
            metrics.update(document_metrics(json.loads(path.read_text()), file_part))
        elif path.suffix in (".yaml", ".yml"):
            metrics.update(document_metrics(yaml.safe_load(path.read_text()), file_part))
        elif path.suffix in (".tsv", ".csv"):
            metrics.update(table_metrics(path, file_part))
    return metrics


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pipeline_state(base: Path) -> str:
    """The pipeline-state id: sha256 of the flattened params and of each mirrored file's bytes.

    dvc.lock and params.yaml's bytes (comments) are left out: the id is what the mirror stage
    depends on, so it is the same inside the running stage and in any later backfill.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(read_params(base), sort_keys=True).encode())
    for name in mirrored_files(base):
        if name not in paths.MIRRORED_FILES:
            digest.update(f"\n{name}\0{_file_hash(Path(base) / name)}".encode())
    return digest.hexdigest()


def read_snapshot(base: Path) -> Snapshot:
    files = mirrored_files(base)
    model_prefix = f"{paths.MIRRORED_MODEL}/"
    return Snapshot(
        params=read_params(base),
        metrics=read_metrics(base, files),
        artifacts=[name for name in files if not name.startswith(model_prefix)],
        has_model=f"{model_prefix}model.json" in files,
        state=pipeline_state(base),
    )


# ----------------------------------------------------------------------------- provenance


def _git(cwd: Path, *args: str, strip: bool = True) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() if strip else result.stdout


def pipeline_outputs(lock_file: Path) -> set[str]:
    """Paths the pipeline writes: every out in dvc.lock, dvc.lock itself, the mirrored folders."""
    outputs = {"dvc.lock", *paths.MIRRORED_FOLDERS}
    try:
        lock = yaml.safe_load(Path(lock_file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return outputs
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            outputs.add(str(out.get("path", "")).rstrip("/"))
    return outputs


def is_dirty(root: Path) -> bool | None:
    """Whether tracked files other than the pipeline's outputs differ from HEAD (None: no git).

    Outputs (metrics, dvc.lock, ...) change in every run, so they do not count: dirty means
    the code or params that produced the run are not those of the commit.
    """
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "-z", strip=False)
    if status is None:
        return None
    outputs = pipeline_outputs(Path(root) / "dvc.lock")
    entries = status.split("\0")
    changed = [entry[3:] for entry in entries if len(entry) > 3 and entry[2] == " "]
    for path in changed:
        if Path(path).name == ".gitignore":
            continue
        if not any(path == out or path.startswith(f"{out}/") for out in outputs):
            return True
    return False


def workspace_tags(root: Path | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Provenance of the pipeline running in ``root`` (a workspace or DVC's temporary copy)."""
    root = Path(root or paths.ROOT)
    environ = os.environ if environ is None else environ
    branch = _git(root, "symbolic-ref", "--short", "-q", "HEAD")
    real = real_root(root, environ)
    if not branch and real != root.resolve():  # DVC's copy has a detached HEAD: the user's branch
        branch = _git(real, "symbolic-ref", "--short", "-q", "HEAD")
    dirty = is_dirty(root)
    return {
        TAG_COMMIT: _git(root, "rev-parse", "HEAD") or "",
        TAG_BRANCH: branch or "",
        TAG_DIRTY: "" if dirty is None else str(dirty).lower(),
        TAG_EXP_NAME: environ.get("DVC_EXP_NAME", ""),
        TAG_BASELINE: environ.get("DVC_EXP_BASELINE_REV", ""),
        TAG_SOURCE: "pipeline",
    }


# ----------------------------------------------------------------------------- spool


@dataclasses.dataclass(frozen=True)
class SpoolEntry:
    """One pipeline state waiting to be sent: ``entry.json`` and a copy of its files."""

    folder: Path

    @property
    def files(self) -> Path:
        return self.folder / "files"

    @property
    def record(self) -> dict[str, Any]:
        return json.loads((self.folder / "entry.json").read_text())


def spool_entries(spool: Path) -> list[SpoolEntry]:
    """Complete entries, oldest first."""
    if not spool.is_dir():
        return []
    entries = [
        SpoolEntry(path)
        for path in spool.iterdir()
        if (path / "entry.json").is_file() and not path.name.startswith(".")
    ]
    return sorted(entries, key=lambda entry: (entry.record.get("spooled_at", 0), entry.folder.name))


@contextlib.contextmanager
def _spool_lock(spool: Path, wait_s: float) -> Iterator[bool]:
    """Hold the spool's lock (True), or give up after ``wait_s`` seconds (False)."""
    spool.mkdir(parents=True, exist_ok=True)
    with open(spool / ".lock", "a+") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.2)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def spool_state(
    spool: Path, fill: Any, tags: Mapping[str, str], uri: str, experiment: str, move_alias: bool
) -> SpoolEntry:
    """Write one entry: ``fill(folder)`` copies the state's files into ``folder``.

    Written beside the spool and renamed into place, so an entry is complete or absent; a
    newer entry of the same state for the same store replaces the older one.
    """
    spool.mkdir(parents=True, exist_ok=True)
    incoming = spool / f".incoming-{uuid.uuid4().hex}"
    try:
        (incoming / "files").mkdir(parents=True)
        fill(incoming / "files")
        state = pipeline_state(incoming / "files")
        record = {
            "state": state,
            "tracking_uri": uri,
            "experiment": experiment,
            "tags": dict(tags),
            "move_alias": move_alias,
            "spooled_at": time.time(),
        }
        (incoming / "entry.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        target = spool / f"{state[:16]}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"
        if target.exists():
            trash = spool / f".trash-{uuid.uuid4().hex}"
            os.replace(target, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(incoming, target)
        return SpoolEntry(target)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def copy_workspace(root: Path) -> Any:
    """A ``fill`` for :func:`spool_state` that copies the state of the folder ``root``."""

    def fill(destination: Path) -> None:
        for name in mirrored_files(root):
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(root) / name, target)

    return fill


def copy_revision(root: Path, commit: str) -> Any:
    """A ``fill`` that reads the state of a git commit (git and DVC-tracked files) via DVC."""

    def fill(destination: Path) -> None:
        from dvc.api import DVCFileSystem

        fs = DVCFileSystem(str(root), rev=commit)
        names = [name for name in paths.MIRRORED_FILES if fs.isfile(name)]
        for folder in paths.MIRRORED_FOLDERS:
            if fs.isdir(folder):
                names += [name.lstrip("/") for name in fs.find(folder)]
        for name in names:
            if any(part.startswith(".") for part in Path(name).parts):
                continue
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                fs.get_file(name, str(target))
            except Exception as error:  # not in the DVC cache, remote unreachable, ...
                raise UserError(
                    f"cannot read {name} of revision {commit[:12]} ({type(error).__name__}); "
                    f"fetch it first, e.g. dvc fetch --rev {commit[:12]} (or dvc exp pull)."
                ) from None

    return fill


# ----------------------------------------------------------------------------- send


@dataclasses.dataclass
class FlushReport:
    """What a flush sent (run name, run id, uri) and what it kept in the spool (entry, uri, reason)."""

    spool: Path
    sent: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    kept: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def warning(self) -> str | None:
        """One warning for everything kept, or None."""
        if not self.kept:
            return None
        reasons = sorted({f"{display_uri(uri)}: {reason}" for _, uri, reason in self.kept})
        return (
            f"could not mirror {len(self.kept)} pipeline run(s) to MLflow ({'; '.join(reasons)}); "
            f"kept in {self.spool}, sent by the next mirror or by: python -m stages.mirror --flush"
        )


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


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


@contextlib.contextmanager
def _mlflow_settings() -> Iterator[None]:
    """Bounded retries and no progress bars while sending (the user's own settings win)."""
    added = [name for name in _MLFLOW_ENV_DEFAULTS if name not in os.environ]
    os.environ.update({name: _MLFLOW_ENV_DEFAULTS[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _quiet_mlflow() -> None:
    """MLflow's INFO lines (database migrations, registrations) would bury the stage's output."""
    for name in ("mlflow", "alembic", "torch._export", "torch.export"):
        logging.getLogger(name).setLevel(logging.ERROR)


def flush(spool: Path | None = None, lock_wait_s: float = LOCK_WAIT_S) -> FlushReport:
    """Send every spooled entry, oldest first; each one sent leaves the spool."""
    spool = Path(spool or spool_dir())
    report = FlushReport(spool)
    with _spool_lock(spool, lock_wait_s) as locked:
        entries = spool_entries(spool)
        if not locked:
            report.kept += [(e.folder.name, e.record["tracking_uri"], "another mirror is sending") for e in entries]
            return report
        down: dict[str, str] = {}
        for entry in entries:
            uri = entry.record["tracking_uri"]
            if uri not in down:
                reason = unreachable(uri)
                if reason:
                    down[uri] = reason
            if uri in down:
                report.kept.append((entry.folder.name, uri, down[uri]))
                continue
            try:
                with _mlflow_settings():
                    run_id, name = send(entry)
            except Exception as error:  # a tracking failure never fails the pipeline
                report.kept.append((entry.folder.name, uri, _describe(error)))
                if unreachable(uri):
                    down[uri] = _describe(error)
                continue
            shutil.rmtree(entry.folder, ignore_errors=True)
            report.sent.append((name, run_id, uri))
    return report


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _experiment_id(client: Any, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=local_artifact_location(uri))
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def find_run(client: Any, experiment_id: str, state: str) -> Any | None:
    """The run of a pipeline state, if it was mirrored before."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_STATE}` = '{state}'",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0] if runs else None


def run_name(tags: Mapping[str, str]) -> str:
    if tags.get(TAG_EXP_NAME):
        return tags[TAG_EXP_NAME]
    commit = tags.get(TAG_COMMIT, "")[:7] or "no-commit"
    branch = tags.get(TAG_BRANCH) or "detached"
    return f"{branch}@{commit}" + ("-dirty" if tags.get(TAG_DIRTY) == "true" else "")


def _comparable(value: float) -> float | str:
    return "nan" if math.isnan(value) else value


def send(entry: SpoolEntry) -> tuple[str, str]:
    """Create or update the run of ``entry``'s pipeline state; returns its run id and name."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    _quiet_mlflow()  # after the import, which configures mlflow's loggers

    record = entry.record
    uri = record["tracking_uri"]
    snapshot = read_snapshot(entry.files)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = _experiment_id(client, record["experiment"], uri)
    run = find_run(client, experiment_id, snapshot.state)
    old_tags = dict(run.data.tags) if run else {}
    # A later mirror of the same state adds or updates what it knows; it never erases.
    tags = {**old_tags, **{key: value for key, value in record["tags"].items() if value}, TAG_STATE: snapshot.state}
    if old_tags.get(TAG_EXP_NAME) and not record["tags"].get(TAG_EXP_NAME):
        tags["mlflow.runName"] = old_tags.get("mlflow.runName", run_name(tags))
    else:
        tags["mlflow.runName"] = run_name(tags)
    tags["mlflow.source.git.commit"] = tags.get(TAG_COMMIT, "")
    tags["mlflow.source.git.branch"] = tags.get(TAG_BRANCH, "")
    if run is None:
        run = client.create_run(experiment_id, run_name=tags["mlflow.runName"], tags={TAG_STATE: snapshot.state})
    run_id = run.info.run_id
    changed = [RunTag(k, v) for k, v in sorted(tags.items()) if v and old_tags.get(k) != v]
    for batch in _chunks(changed, _BATCH_PARAMS):
        client.log_batch(run_id, tags=batch)

    old_params = run.data.params
    params = [Param(k, v) for k, v in sorted(snapshot.params.items()) if k not in old_params]
    for batch in _chunks(params, _BATCH_PARAMS):
        client.log_batch(run_id, params=batch)

    timestamp = int(record["spooled_at"] * 1000)
    metrics = []
    for key, points in sorted(snapshot.metrics.items()):
        logged = set()
        if key in run.data.metrics:  # only points not there yet: a metric's history never doubles
            logged = {(m.step, _comparable(m.value)) for m in client.get_metric_history(run_id, key)}
        metrics += [
            Metric(key, value, timestamp, step) for step, value in points if (step, _comparable(value)) not in logged
        ]
    for batch in _chunks(metrics, _BATCH_METRICS):
        client.log_batch(run_id, metrics=batch)

    for name in snapshot.artifacts:
        client.log_artifact(run_id, str(entry.files / name), str(Path(name).parent.as_posix()) if "/" in name else None)

    if snapshot.has_model:
        _log_model(client, uri, experiment_id, run_id, entry.files / paths.MIRRORED_MODEL, tags, record["move_alias"])
    client.set_terminated(run_id, "FINISHED")
    return run_id, tags["mlflow.runName"]


def model_signature(image_size: int, classes: int) -> Any:
    """Input: normalised float32 images (-1, 3, S, S); output: float32 logits (-1, classes)."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, image_size, image_size))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes))]),
    )


def example_input(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """A fixed batch of uint8 images normalised as the model expects (float32 NCHW)."""
    import numpy as np

    from lifecycle.images import to_model_input

    images = np.random.default_rng(0).integers(0, 256, size=(EXAMPLE_IMAGES, image_size, image_size, 3), dtype=np.uint8)
    return to_model_input(images, mean, std).numpy()


@contextlib.contextmanager
def global_store(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking and registry URIs at ``uri`` for a while.

    The fluent API (``log_model``) and the registry resolve ``models:/`` through them. MLflow
    also exports them as environment variables for child processes; both are restored
    exactly afterwards, so nothing leaks into the caller's process or its children.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {name: os.environ.get(name) for name in names}
    saved_tracking, saved_registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)
        registry_utils._registry_uri = saved_registry
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _log_model(
    client: Any, uri: str, experiment_id: str, run_id: str, folder: Path, tags: Mapping[str, str], move_alias: bool
) -> None:
    """Log the selected model once per run, register it once, and point the alias at it."""
    import mlflow
    import mlflow.pytorch
    import torch

    from lifecycle.models import SIDECAR_FILE, load_model

    with global_store(uri):
        logged = [
            model
            for model in client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
            if model.name == MODEL_NAME and str(model.status).upper().endswith("READY")
        ]
        if logged:
            model_id = logged[0].model_id
        else:
            model, spec = load_model(folder)
            with torch.no_grad(), mlflow.start_run(run_id=run_id):
                model_id = mlflow.pytorch.log_model(
                    model,
                    name=MODEL_NAME,
                    signature=model_signature(spec.image_size, len(spec.classes)),
                    input_example=example_input(spec.image_size, spec.mean, spec.std),
                    extra_files=[str(folder / SIDECAR_FILE)],
                    pip_requirements=[f"torch=={metadata.version('torch')}", f"numpy=={metadata.version('numpy')}"],
                    serialization_format="pt2",
                    tags={TAG_STATE: tags[TAG_STATE]},
                ).model_id

        versions = client.search_model_versions(f"name = '{REGISTERED_MODEL}' and run_id = '{run_id}'")
        if versions:
            version = max(versions, key=lambda v: int(v.version))
        else:
            if not client.search_registered_models(filter_string=f"name = '{REGISTERED_MODEL}'"):
                client.create_registered_model(REGISTERED_MODEL)
            version_tags = {key: tags[key] for key in (TAG_STATE, TAG_COMMIT, TAG_EXP_NAME) if tags.get(key)}
            version = client.create_model_version(
                REGISTERED_MODEL, source=f"models:/{model_id}", run_id=run_id, model_id=model_id, tags=version_tags
            )
        aliases = client.get_registered_model(REGISTERED_MODEL).aliases
        if move_alias or ALIAS not in aliases:
            client.set_registered_model_alias(REGISTERED_MODEL, ALIAS, str(version.version))


# ----------------------------------------------------------------------------- commands


def mirror_workspace(root: Path | None = None, environ: Mapping[str, str] | None = None) -> FlushReport:
    """Spool the pipeline state of ``root`` (the workspace or DVC's temporary copy), then flush."""
    root = Path(root or paths.ROOT)
    environ = os.environ if environ is None else environ
    spool = spool_dir(root, environ)
    tags = workspace_tags(root, environ)
    uri = tracking_uri(root, environ)
    try:
        spool_state(spool, copy_workspace(root), tags, uri, experiment_name(environ), move_alias=True)
    except Exception as error:  # even then the pipeline goes on; the warning says what was lost
        report = flush(spool)
        report.kept.append((str(root), uri, f"could not even spool it: {_describe(error)}"))
        return report
    return flush(spool)


def experiment_refs(root: Path) -> dict[str, tuple[str, str]]:
    """DVC experiments of the repository: commit -> (experiment name, baseline commit)."""
    listing = _git(root, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/") or ""
    experiments = {}
    for line in listing.splitlines():
        commit, _, ref = line.partition(" ")
        parts = ref.split("/")  # refs/exps/<baseline[:2]>/<baseline[2:]>/<name>
        if len(parts) == 5 and len(parts[2]) == 2 and len(parts[3]) == 38:
            experiments[commit] = (parts[4], parts[2] + parts[3])
    return experiments


def revision_tags(root: Path, rev: str) -> tuple[str, dict[str, str]]:
    """The commit of a git revision or DVC experiment name, and its provenance tags."""
    experiments = experiment_refs(root)
    commit = _git(root, "rev-parse", "--verify", "-q", f"{rev}^{{commit}}")
    if commit is None:
        named = [sha for sha, (name, _) in experiments.items() if name == rev]
        if not named:
            raise UserError(
                f"'{rev}' is neither a git revision nor a DVC experiment of {root} "
                "(see git log and dvc exp list --all-commits)."
            )
        commit = named[0]
    name, baseline = experiments.get(commit, ("", ""))
    if _git(root, "show-ref", "--verify", "-q", f"refs/heads/{rev}") is not None:
        branch = rev
    else:
        listing = _git(root, "branch", "--contains", baseline or commit, "--format=%(refname:short)") or ""
        branch = ",".join(listing.split()[:3])
    return commit, {
        TAG_COMMIT: commit,
        TAG_BRANCH: branch,
        TAG_DIRTY: "false",
        TAG_EXP_NAME: name,
        TAG_BASELINE: baseline,
        TAG_SOURCE: f"backfill {rev}",
    }


def mirror_revisions(
    revs: list[str], root: Path | None = None, environ: Mapping[str, str] | None = None
) -> FlushReport:
    """Backfill: spool the pipeline state of each git revision or DVC experiment, then flush.

    Does not move the ``candidate`` alias (history is not a new candidate) unless the
    registered model has none yet.
    """
    root = real_root(root, environ)
    environ = os.environ if environ is None else environ
    spool = spool_dir(root, environ)
    for rev in revs:
        commit, tags = revision_tags(root, rev)
        uri = tracking_uri(root, environ)
        spool_state(spool, copy_revision(root, commit), tags, uri, experiment_name(environ), move_alias=False)
    return flush(spool)
