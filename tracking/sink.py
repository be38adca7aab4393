"""The MLflow sink: the only code that writes pipeline runs, logged models and registry versions.
(The promotion gate's writes, the alias ``champion`` and its tags, are :mod:`tracking.registry`'s.)

:func:`send` creates or updates the run of one spooled pipeline state (idempotent: a state
mirrored again updates its run; only missing params and metric points are logged), in this
order: tags and params; the selected model (:func:`tracking.flavours.log_models`: ``mlflow.pytorch.log_model``,
torch.export "pt2" format, no pickle, sidecar as ``extra_files/model.json``; and, through
:mod:`tracking.pyfunc`, as ``image-model``, a pyfunc that takes image bytes); metrics, the
step-0 points linked to that model; artifacts; and last the registration (:func:`register`)
of the pt2 model as a version of ``cats-vs-dogs``, with the alias ``candidate`` moved to the
newest pipeline run's version. (The alias ``champion`` is moved only by ``python -m tracking.promote``.)

Where: the store :func:`tracking.store.tracking_uri` names, with a sqlite store's artifacts in
``mlartifacts/`` beside it. Retries are bounded and progress bars off unless the user chose otherwise.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lifecycle.core import paths
from tracking.flavours import MODEL_STEP, log_models
from tracking.provenance import (
    TAG_BRANCH,
    TAG_COMMIT,
    TAG_COMMITS,
    TAG_DIRTY,
    TAG_EXP_NAME,
    TAG_EXP_NAMES,
    TAG_STATE,
)
from tracking.snapshot import read_snapshot
from tracking.spool import SpoolEntry
from tracking.store import CANDIDATE, REGISTERED_MODEL, global_store, local_artifact_location, quiet_mlflow

_BATCH_PARAMS = 100    # MLflow's limits per log_batch call
_BATCH_METRICS = 1000


def describe_error(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


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


def merged_tags(old: Mapping[str, str], new: Mapping[str, str], state: str) -> dict[str, str]:
    """The tags of a state's run after one more mirror of it: nothing is erased or renamed.

    The newest mirror refreshes the commit, branch and source; the first experiment's name
    stays the run's name and its ``dvc.exp_name``; every experiment name and every commit
    that produced the state is appended to ``dvc.exp_names`` and ``git.commits``, so each
    experiment is found by its name, in the UI or with
    ``tags."dvc.exp_names" LIKE '%<name>%'``.
    """
    tags = {**old, **{key: value for key, value in new.items() if value}, TAG_STATE: state}
    if old.get(TAG_EXP_NAME):
        tags[TAG_EXP_NAME] = old[TAG_EXP_NAME]
    for list_tag, one in ((TAG_EXP_NAMES, TAG_EXP_NAME), (TAG_COMMITS, TAG_COMMIT)):
        listed = (old.get(list_tag) or old.get(one) or "").split()
        if new.get(one) and new[one] not in listed:
            listed.append(new[one])
        if listed:
            tags[list_tag] = " ".join(listed)
    tags["mlflow.runName"] = old.get("mlflow.runName") or run_name(tags)
    return tags


def run_name(tags: Mapping[str, str]) -> str:
    if tags.get(TAG_EXP_NAME):
        return tags[TAG_EXP_NAME]
    commit = tags.get(TAG_COMMIT, "")[:7] or "no-commit"
    branch = tags.get(TAG_BRANCH) or "detached"
    return f"{branch}@{commit}" + ("-dirty" if tags.get(TAG_DIRTY) == "true" else "")


def _comparable(value: float) -> float | str:
    return "nan" if math.isnan(value) else value


def send(entry: SpoolEntry) -> tuple[str, str]:
    """Create or update the run of ``entry``'s pipeline state; returns its run id and a label:
    the run's name, or ``<this mirror's name> (in run '<the run's name>')`` when the state's run
    is named after an earlier experiment (see :func:`merged_tags`)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    quiet_mlflow()  # after the import, which configures mlflow's loggers

    record = entry.record
    uri = record["tracking_uri"]
    snapshot = read_snapshot(entry.files)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = _experiment_id(client, record["experiment"], uri)
    run = find_run(client, experiment_id, snapshot.state)
    old_tags = dict(run.data.tags) if run else {}
    tags = merged_tags(old_tags, record["tags"], snapshot.state)
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

    # The model goes before the metrics: MLflow links a new logged model to the run's metrics
    # at its step by reading back the history of every metric, one call each (186 for this
    # pipeline; an HTTP round trip each on a server). Logged first, it finds none, and the
    # metrics below carry its model_id themselves: the same link, without the reads.
    model_id = None
    if snapshot.has_model:
        with global_store(uri):
            model_id = log_models(client, experiment_id, run_id, entry.files / paths.MIRRORED_MODEL, tags)

    timestamp = int(record["spooled_at"] * 1000)
    metrics = []
    for key, points in sorted(snapshot.metrics.items()):
        logged = set()
        if key in run.data.metrics:  # only points not there yet: a metric's history never doubles
            logged = {(m.step, _comparable(m.value)) for m in client.get_metric_history(run_id, key)}
        metrics += [
            Metric(key, value, timestamp, step, model_id=model_id if step == MODEL_STEP else None)
            for step, value in points
            if (step, _comparable(value)) not in logged
        ]
    for batch in _chunks(metrics, _BATCH_METRICS):
        client.log_batch(run_id, metrics=batch)

    for name in snapshot.artifacts:
        client.log_artifact(run_id, str(entry.files / name), str(Path(name).parent.as_posix()) if "/" in name else None)

    if model_id is not None:  # last: an alias never points at a run still being written
        register(client, uri, run_id, model_id, tags, record["move_alias"])
    client.set_terminated(run_id, "FINISHED")
    mine = run_name({**record["tags"], TAG_STATE: snapshot.state})
    if mine == tags["mlflow.runName"]:
        return run_id, mine
    return run_id, f"{mine} (in run '{tags['mlflow.runName']}', this state's first name)"


def register(client: Any, uri: str, run_id: str, model_id: str, tags: Mapping[str, str], move_alias: bool) -> Any:
    """Register the run's model once as a version of ``REGISTERED_MODEL``; move ``candidate`` to it.

    ``move_alias`` False (a backfill) still sets the alias when no version holds it yet.
    """
    with global_store(uri):  # the registry resolves the version's source, models:/<model id>, through it
        versions = client.search_model_versions(f"name = '{REGISTERED_MODEL}' and run_id = '{run_id}'")
        if versions:
            version = max(versions, key=lambda v: int(v.version))
        else:
            if not client.search_registered_models(filter_string=f"name = '{REGISTERED_MODEL}'"):
                client.create_registered_model(REGISTERED_MODEL)
            version_tags = {k: tags[k] for k in (TAG_STATE, TAG_COMMIT, TAG_EXP_NAME, TAG_EXP_NAMES) if tags.get(k)}
            version = client.create_model_version(
                REGISTERED_MODEL, source=f"models:/{model_id}", run_id=run_id, model_id=model_id, tags=version_tags
            )
        aliases = client.get_registered_model(REGISTERED_MODEL).aliases
        if move_alias or CANDIDATE not in aliases:
            client.set_registered_model_alias(REGISTERED_MODEL, CANDIDATE, str(version.version))
    return version
