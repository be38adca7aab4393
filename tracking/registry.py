"""The Model Registry's two aliases of ``cats-vs-dogs``, as the promotion gate reads and moves them.

- ``candidate`` (:data:`tracking.sink.ALIAS`): moved by the mirror to every new pipeline run's model;
- ``champion`` (:data:`CHAMPION`): moved only by ``python -m tracking.promote`` and
  ``python -m tracking.rollback``; the service answers with it (``serving/``).

Champion's history is the registered model's tag ``champion.history``: every version that held
the alias, oldest first, the current one last; a rollback steps back through it. Each decision
is also written as tags on the versions it concerned (:meth:`Decision.tags`).

in: the tracking store (``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` at the repository
root, as the mirror writes it). out: versions resolved, models loaded with their sidecars (the
pt2 model and ``extra_files/model.json``, through :func:`lifecycle.inference.load_predictor`),
the alias moved, tags written. Every mistake a user can make is one :class:`UserError` sentence.
Callers hold :func:`tracking.sink.mlflow_settings` (bounded retries) around its use.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lifecycle.core import paths
from lifecycle.core.errors import UserError
from lifecycle.models import ModelSpec
from tracking.sink import ALIAS as CANDIDATE
from tracking.sink import (
    REGISTERED_MODEL,
    display_uri,
    global_store,
    quiet_mlflow,
    tracking_uri,
    unreachable,
)

CHAMPION = "champion"
HISTORY_TAG = "champion.history"   # registered-model tag: versions that held champion, oldest first, space-separated


class Registry:
    """``REGISTERED_MODEL`` in one tracking store: its aliases, versions, models and tags."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri or tracking_uri()
        self.shown = display_uri(self.uri)
        _check_store(self.uri)
        from mlflow import MlflowClient

        quiet_mlflow()
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        if not self.client.search_registered_models(filter_string=f"name = '{REGISTERED_MODEL}'"):
            raise UserError(
                f"the MLflow registry at {self.shown} has no model '{REGISTERED_MODEL}'; run the pipeline "
                f"(dvc repro), whose mirror stage registers the selected model."
            )

    def version_of(self, alias: str) -> int | None:
        """The version the alias points at, or None."""
        aliases = self.client.get_registered_model(REGISTERED_MODEL).aliases
        return int(aliases[alias]) if alias in aliases else None

    def candidate(self) -> int:
        version = self.version_of(CANDIDATE)
        if version is None:
            raise UserError(
                f"'{REGISTERED_MODEL}' in the MLflow registry at {self.shown} has no version with the alias "
                f"'{CANDIDATE}'; run the pipeline (dvc repro or dvc exp run), whose mirror stage sets it."
            )
        return version

    def load(self, version: int) -> tuple[Callable[..., Any], ModelSpec]:
        """The model of ``version`` (on CPU) and its sidecar, fetched from the registry."""
        from lifecycle.inference import load_predictor

        uri = f"models:/{REGISTERED_MODEL}/{version}"
        with global_store(self.uri):
            predictor = load_predictor(uri, device=_cpu())
        return predictor.model, predictor.spec

    def history(self) -> list[int]:
        """Versions that held champion, oldest first (the current champion last)."""
        tags = self.client.get_registered_model(REGISTERED_MODEL).tags
        return [int(v) for v in tags.get(HISTORY_TAG, "").split() if v.isdigit()]

    def exists(self, version: int) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version(REGISTERED_MODEL, str(version))
        except MlflowException:
            return False
        return True

    def move_champion(self, version: int, history: list[int]) -> None:
        """Point champion at ``version`` and store ``history`` (which ends with it)."""
        self.client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, str(version))
        self.client.set_registered_model_tag(REGISTERED_MODEL, HISTORY_TAG, " ".join(str(v) for v in history))

    def tag(self, versions: list[int | None], tags: Mapping[str, str]) -> None:
        """The same tags on each version named (None and repeats skipped)."""
        for version in dict.fromkeys(v for v in versions if v is not None):
            for key, value in tags.items():
                self.client.set_model_version_tag(REGISTERED_MODEL, str(version), key, value)


def _cpu() -> Any:
    import torch

    return torch.device("cpu")  # the gate scores on CPU: same answers on every machine, no GPU needed


def _check_store(uri: str) -> None:
    """A UserError when there is no store to read: no sqlite file yet, or a server that does not answer."""
    if uri.startswith("sqlite:///"):
        database = Path(uri[len("sqlite:///"):])
        if not database.is_file():
            raise UserError(
                f"there is no MLflow registry at {display_uri(uri)} ({paths.relative(database)} does not exist); "
                f"run the pipeline (dvc repro), whose mirror stage creates it, or set MLFLOW_TRACKING_URI to your "
                f"tracking server."
            )
        return
    reason = unreachable(uri)
    if reason:
        raise UserError(
            f"the MLflow tracking server at {display_uri(uri)} does not answer ({reason}); start it, or point "
            f"MLFLOW_TRACKING_URI at one that runs."
        )
