"""Which model the service answers with, and picking up a newly promoted one while it runs.

in: ``SERVE_MODEL`` (a model folder or an MLflow model URI; empty: the default below), the
tracking store (``MLFLOW_TRACKING_URI``, else ``mlflow.db`` at the repository root if it
exists), and ``models/best``.  out: a :class:`ServedModel` whose ``current`` is the loaded
predictor and the reason it was chosen.

The default is ``models:/cats-vs-dogs@champion`` when the tracking store holds that alias
(it is moved only by the promotion command), otherwise ``models/best``. An alias is resolved
to its version first and that version is loaded, so the version shown is the one answering.

Hot reload: :meth:`ServedModel.refresh` re-resolves the choice and, when a different model
was promoted (``models/best`` replaced, the alias moved, or the champion appeared), loads it
beside the one in use and swaps one reference: requests in flight finish on the model they
started with, later ones get the new model, none is dropped. A background thread per worker
calls it every ``SERVE_RELOAD_SECONDS``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

from lifecycle.core import paths
from lifecycle.core.errors import UserError
from lifecycle.inference import Predictor, is_mlflow_source, load_predictor
from lifecycle.models import SIDECAR_FILE, WEIGHTS_FILE

REGISTERED_MODEL = "cats-vs-dogs"  # the registry name the MLflow mirror registers the selected model under
CHAMPION_ALIAS = "champion"        # moved only by the promotion command, never by a pipeline run

FROM_STORE = object()  # ServedModel's default registry: the tracking store's, if there is one

log = logging.getLogger(__name__)


class RegistryUnavailable(Exception):
    """The tracking store could not be read (not: it holds no such model)."""


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """One resolved answer to "which model": what to load, what to show, why, and what identifies it."""

    load: str      # what load_predictor gets: a folder, or an immutable models:/name/N
    shown: str     # what /health and /metadata show as the source: models/best, models:/name@alias, ...
    reason: str    # one sentence: why this model
    key: tuple     # equal keys mean the same model files or registry version; a new key means reload


@dataclasses.dataclass(frozen=True)
class Served:
    """The predictor answering now and the choice it came from (swapped as one reference)."""

    choice: ModelChoice
    predictor: Predictor


def tracking_store() -> str | None:
    """``MLFLOW_TRACKING_URI``, else the repository's ``sqlite:///.../mlflow.db`` if that file exists, else None."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    database = paths.ROOT / paths.MLFLOW_DB
    return f"sqlite:///{database}" if database.is_file() else None


class Registry:
    """Alias lookups in one tracking store, through one cached MLflow client."""

    def __init__(self, store: str) -> None:
        self.store = store
        self._client = None

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version ``name@alias`` points at; None when the store has no such model or alias."""
        from mlflow.exceptions import MlflowException

        try:
            if self._client is None:
                from mlflow import MlflowClient

                self._client = MlflowClient(tracking_uri=self.store, registry_uri=self.store)
            aliases = self._client.get_registered_model(name).aliases
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise RegistryUnavailable(f"{self.store}: {str(error).splitlines()[0]}") from None
        except Exception as error:  # a broken database file, a network error below MLflow's own
            raise RegistryUnavailable(f"{self.store}: {type(error).__name__}: {str(error).splitlines()[0]}") from None
        version = aliases.get(alias)
        return None if version is None else str(version)


def folder_key(folder: Path) -> tuple:
    """Inode, size and modification time of the weights and the sidecar: replacing either changes it."""
    signature: list = ["folder", str(folder)]
    for name in (WEIGHTS_FILE, SIDECAR_FILE):
        try:
            stat = (folder / name).stat()
            signature.append((name, stat.st_ino, stat.st_size, stat.st_mtime_ns))
        except OSError:
            signature.append((name, None))
    return tuple(signature)


def choose_model(requested: str | None, registry: Registry | None, best: Path | None = None) -> ModelChoice:
    """Resolve ``SERVE_MODEL`` (``requested``), or the default when it is empty; see the module docstring.

    ``registry`` is the tracking store's (None: there is none); ``best`` the selected model
    folder (default models/best). Raises RegistryUnavailable when the store cannot be read.
    """
    best = best or paths.BEST_MODEL
    if requested:
        return _choose_requested(requested, registry)
    if registry is None:
        return ModelChoice(str(best), paths.relative(best), "no tracking store (MLFLOW_TRACKING_URI is unset and "
                           f"there is no {paths.MLFLOW_DB}), so the selected model folder.", folder_key(best))
    version = registry.alias_version(REGISTERED_MODEL, CHAMPION_ALIAS)
    if version is None:
        return ModelChoice(str(best), paths.relative(best), f"the tracking store {registry.store} has no "
                           f"{REGISTERED_MODEL}@{CHAMPION_ALIAS}, so the selected model folder.", folder_key(best))
    return ModelChoice(f"models:/{REGISTERED_MODEL}/{version}", f"models:/{REGISTERED_MODEL}@{CHAMPION_ALIAS}",
                       f"the tracking store {registry.store} has {REGISTERED_MODEL}@{CHAMPION_ALIAS} "
                       f"(version {version}).", ("registry", registry.store, REGISTERED_MODEL, version))


def _choose_requested(requested: str, registry: Registry | None) -> ModelChoice:
    reason = "SERVE_MODEL names it."
    if requested.startswith("models:/") and "@" in requested:
        name, alias = requested[len("models:/"):].strip("/").split("@", 1)
        if registry is None:
            raise UserError(f"SERVE_MODEL={requested} needs a tracking store: set MLFLOW_TRACKING_URI, or run the "
                            f"pipeline's mirror stage so that {paths.MLFLOW_DB} exists.")
        version = registry.alias_version(name, alias)
        if version is None:
            raise UserError(f"SERVE_MODEL={requested}: the tracking store {registry.store} has no model {name} "
                            f"with the alias {alias}.")
        return ModelChoice(f"models:/{name}/{version}", requested, f"SERVE_MODEL names it (version {version}).",
                           ("registry", registry.store, name, version))
    if is_mlflow_source(requested):  # runs:/, models:/name/N, a local MLflow model: immutable
        return ModelChoice(requested, requested, reason, ("fixed", requested))
    folder = Path(requested)
    if not folder.is_absolute() and not folder.exists():
        folder = paths.ROOT / folder
    return ModelChoice(str(folder), paths.relative(folder), reason, folder_key(folder))


class ServedModel:
    """The model one worker serves; :meth:`refresh` swaps in a newly promoted one without a pause."""

    def __init__(self, requested: str | None, predictor: Predictor | None = None,
                 load: Callable[[str], Predictor] = load_predictor, registry: Registry | None | object = FROM_STORE,
                 best: Path | None = None) -> None:
        """``requested``: SERVE_MODEL (empty: the default). ``predictor``: serve this one, never reload.
        ``load``, ``registry`` and ``best`` replace the loader, the tracking store's registry and
        models/best (tests)."""
        self.requested = requested or None
        self.best = best
        self._load = load
        self._failed_key: tuple | None = None
        if predictor is not None:  # given by the caller (tests, embedding): served as is, never reloaded
            identity = predictor.identity
            choice = ModelChoice(identity.source, identity.source, "given to create_app.", ("fixed", id(predictor)))
            self.registry = None
            self.current = Served(choice, predictor)
            return
        if registry is FROM_STORE:
            store = tracking_store()
            registry = Registry(store) if store else None
        self.registry = registry
        try:
            choice = choose_model(self.requested, self.registry, self.best)
        except RegistryUnavailable as error:
            raise UserError(f"cannot read the model registry ({error}); set SERVE_MODEL=models/best to serve the "
                            f"selected model folder without it, or fix MLFLOW_TRACKING_URI.") from None
        self.current = Served(choice, self._loaded(choice))
        log.info("serving %s (%s version %s): %s", choice.shown, self.current.predictor.identity.name,
                 self.current.predictor.identity.version, choice.reason)

    @property
    def reloads(self) -> bool:
        return self.current.choice.key[0] != "fixed"

    def refresh(self) -> bool:
        """Load and swap in the model now chosen if it differs from the one served; True if it swapped.

        A registry that cannot be read, or a new model that fails to load, leaves the served
        model in place (logged once per failing model), so a hiccup never takes the service down
        nor swaps in the fallback folder.
        """
        if not self.reloads:
            return False
        try:
            choice = choose_model(self.requested, self.registry, self.best)
        except (RegistryUnavailable, UserError) as error:
            log.warning("kept %s: %s", self.current.choice.shown, error)
            return False
        if choice.key == self.current.choice.key or choice.key == self._failed_key:
            return False
        try:
            predictor = self._loaded(choice)
        except Exception as error:  # a half-copied folder, a deleted version: keep answering with the old one
            self._failed_key = choice.key
            log.warning("kept %s: the newly promoted %s did not load: %s", self.current.choice.shown, choice.shown,
                        str(error).splitlines()[0] if str(error) else type(error).__name__)
            return False
        old = self.current.predictor.identity
        self.current = Served(choice, predictor)
        log.info("reloaded: now serving %s (%s version %s, was %s version %s): %s", choice.shown,
                 predictor.identity.name, predictor.identity.version, old.name, old.version, choice.reason)
        return True

    def watch(self, every: float) -> threading.Thread | None:
        """Call :meth:`refresh` every ``every`` seconds in a daemon thread, until this object is gone."""
        if every <= 0 or not self.reloads:
            return None
        stop = threading.Event()
        served = weakref.ref(self, lambda _: stop.set())

        def poll() -> None:
            while not stop.wait(every):
                target = served()
                if target is None:
                    return
                try:
                    target.refresh()
                except Exception:  # the watcher must outlive any surprise; the old model keeps answering
                    log.exception("refreshing the served model failed")
                del target

        thread = threading.Thread(target=poll, name="model-reload", daemon=True)
        thread.start()
        return thread

    def _loaded(self, choice: ModelChoice) -> Predictor:
        predictor = self._load(choice.load)
        return Predictor(predictor.model, predictor.spec,
                         dataclasses.replace(predictor.identity, source=choice.shown), predictor.device)
