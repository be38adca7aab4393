"""A pipeline state as MLflow holds it, read from DVC's files alone: pure, no MLflow, no git.

in: a folder holding a state: ``params.yaml``, ``dvc.lock``, ``metrics/**``, ``plots/**``,
``reports/**``, ``models/best/`` (the workspace, DVC's temporary copy of an experiment, or a
past revision read through DVC). out: a :class:`Snapshot`:

- params: every key of params.yaml but those of the gate and of monitoring the served model
  (:data:`NOT_STATE_PARAMS`: they describe the registry and the deployment, not a model; whether
  served images join the data is ``ingest.served``), flattened with dots (``seed``, ``augment.hflip``);
- metrics: every number in metrics/, named ``<file under metrics/ without extension>/<key.path>``
  (``split/train.images``); DVCLive curves (``metrics/<d>/plots/metrics/<name>.tsv``) as
  stepped metrics ``<d>/<name>``; lists of numbers or of records as stepped metrics. These
  are DVC's metrics, the headline a reviewer compares, under the same keys;
- artifacts: every file but the model's -- so the breakdowns behind the metrics (confusion
  matrices, per-class and per-reason counts in plots/, eda's summary in reports/) are in the
  run as files, not as one MLflow metric per class or reason; whether the selected model is there;
- the state id: a sha256 of the flattened params and of every file under metrics/, plots/,
  reports/ and models/best/ -- exactly what the ``mirror`` stage depends on, so the stage, a later
  backfill of the commit and a backfill of the DVC experiment compute the same id. (The
  bytes of dvc.lock cannot be the id: DVC writes the mirror stage's own entry after it ran.)
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from lifecycle.core import paths
from lifecycle.core.errors import UserError
from lifecycle.core.io import file_sha256

# Top-level params.yaml keys that are not part of a pipeline state: the promotion gate's settings,
# and where the service's log is and how monitor judges it. The mirror stage's params in dvc.yaml
# leave them out too, so changing them re-mirrors nothing.
NOT_STATE_PARAMS = ("promote", "served", "monitor")
_MAX_KEY = 250
_MAX_PARAM_VALUE = 6000
_STEP_COLUMNS = ("step", "epoch")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A pipeline state as MLflow will hold it."""

    params: dict[str, str]                             # flattened key -> value text
    metrics: dict[str, list[tuple[int, float]]]       # metric key -> (step, value) points
    artifacts: list[str]                               # relative paths of files logged as artifacts
    has_model: bool                                    # models/best/model.json is there
    state: str                                         # the pipeline-state id


def mirrored_files(base: Path) -> list[str]:
    """Relative paths of every file of a pipeline state under ``base``.

    Hidden files are skipped, and so are the promotion gate's records (``paths.NOT_MIRRORED``):
    they describe the registry, not the pipeline, so a promotion never makes a new state.
    """
    base = Path(base)
    found = [name for name in paths.MIRRORED_FILES if (base / name).is_file()]
    for folder in paths.MIRRORED_FOLDERS:
        for path in sorted((base / folder).rglob("*")):
            relative = path.relative_to(base)
            if path.is_file() and is_mirrored(relative.as_posix()):
                found.append(relative.as_posix())
    return sorted(found)


def is_mirrored(name: str) -> bool:
    """Whether the file ``name`` (relative to a repository root) belongs to a pipeline state."""
    return name not in paths.NOT_MIRRORED and not any(part.startswith(".") for part in Path(name).parts)


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
    return flatten_params({key: value for key, value in document.items() if key not in NOT_STATE_PARAMS})


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


def pipeline_state(base: Path) -> str:
    """The pipeline-state id: sha256 of the flattened params and of each mirrored file's bytes.

    dvc.lock and params.yaml's bytes (comments) are left out: the id is what the mirror stage
    depends on, so it is the same inside the running stage and in any later backfill. So is
    ``monitor``'s report (``paths.NOT_STATE_FILES``): what was served since is no part of a
    model's state, so a new drift verdict updates the state's run instead of making a new one.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(read_params(base), sort_keys=True).encode())
    for name in mirrored_files(base):
        if name not in paths.MIRRORED_FILES and not name.startswith(paths.NOT_STATE_FILES):
            digest.update(f"\n{name}\0{file_sha256(Path(base) / name)}".encode())
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
