"""The Model Registry's ``cats-vs-dogs``: the aliases the service reads and the promotion gate moves.

- ``candidate``: moved by the mirror (:func:`tracking.sink.register`) to every new pipeline run's model;
- ``champion``: moved only here, by ``python -m tracking.promote`` and ``python -m tracking.rollback``;
  the service answers with it (``serving/``).

Champion's history is the registered model's tag ``champion.history``: every version that held
the alias, oldest first, the current one last; a rollback steps back through it. Each decision
is also written as tags on the versions it concerned (:meth:`Decision.tags`). The alias
``champion``, its history and the gate's tags are written by this module alone.

in: the tracking store (:func:`tracking.store.tracking_uri`). out: alias lookups
(:meth:`Registry.alias_version`: None when there is no such model or alias,
:class:`RegistryUnavailable` when the store cannot be read), versions' models with their sidecars
(:mod:`tracking.mlflow_model`), the alias moved, tags written. :meth:`Registry.open` is the
gate's: every mistake a user can make there is one :class:`UserError` sentence.
Callers hold :func:`tracking.store.mlflow_settings` (bounded retries) around its use.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lifecycle.core import paths
from lifecycle.core.errors import UserError
from lifecycle.models import ModelSpec
from tracking.store import (
    CANDIDATE,
    CHAMPION,
    REGISTERED_MODEL,
    display_uri,
    global_store,
    quiet_mlflow,
    sqlite_file,
    tracking_uri,
    unreachable,
)

HISTORY_TAG = "champion.history"   # registered-model tag: versions that held champion, oldest first, space-separated


class RegistryUnavailable(Exception):
    """The tracking store could not be read (not: it holds no such model)."""


class Registry:
    """``REGISTERED_MODEL`` in one tracking store, through one MLflow client made on first use."""

    def __init__(self, store: str | None = None) -> None:
        self.store = store or tracking_uri()
        self.shown = display_uri(self.store)
        self._client = None

    @classmethod
    def open(cls, store: str | None = None) -> "Registry":
        """The gate's registry: a UserError unless the store exists and holds ``REGISTERED_MODEL``."""
        registry = cls(store)
        _check_store(registry.store)
        if not registry.client.search_registered_models(filter_string=f"name = '{REGISTERED_MODEL}'"):
            raise UserError(
                f"the MLflow registry at {registry.shown} has no model '{REGISTERED_MODEL}'; run the pipeline "
                f"(dvc repro), whose mirror stage registers the selected model."
            )
        return registry

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            quiet_mlflow()
            self._client = MlflowClient(tracking_uri=self.store, registry_uri=self.store)
        return self._client

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version ``name@alias`` points at; None when the store has no such model or alias."""
        from mlflow.exceptions import MlflowException

        try:
            aliases = self.client.get_registered_model(name).aliases
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise RegistryUnavailable(f"{self.shown}: {str(error).splitlines()[0]}") from None
        except Exception as error:  # a broken database file, a network error below MLflow's own
            raise RegistryUnavailable(f"{self.shown}: {type(error).__name__}: {str(error).splitlines()[0]}") from None
        version = aliases.get(alias)
        return None if version is None else str(version)

    def version_of(self, alias: str) -> int | None:
        """The version the alias points at, or None."""
        version = self.alias_version(REGISTERED_MODEL, alias)
        return None if version is None else int(version)

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
        from tracking.mlflow_model import load_mlflow_model

        uri = f"models:/{REGISTERED_MODEL}/{version}"
        with global_store(self.store):
            predictor = load_mlflow_model(uri, device=_cpu())
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
    database = sqlite_file(uri)
    if database is not None:
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
