"""Which model the service answers with, and picking up a newly promoted one while it runs.

in: ``SERVE_MODEL`` (a model folder or an MLflow model URI; empty: the default below), the
tracking store (:func:`tracking.store.existing_store`: the one the mirror writes, if it exists),
and ``models/best``.  out: a :class:`ServedModel` whose ``current`` is the loaded
predictor and the reason it was chosen.

The default is ``models:/cats-vs-dogs@champion`` when the tracking store holds that alias
(it is moved only by the promotion command), otherwise ``models/best``. An alias is resolved
to its version first and that version is loaded, so the version shown is the one answering.

Hot reload: :meth:`ServedModel.refresh` re-resolves the choice and, when a different model
was promoted (``models/best`` replaced, the alias moved, or the champion appeared), loads it
beside the one in use and swaps one reference: requests in flight finish on the model they
started with, later ones get the new model, none is dropped. A background thread per worker
calls it every ``SERVE_RELOAD_SECONDS``.

A model that does not load never stops a worker: at start, a worker falls back to the last
model that loaded in this service (:mod:`serving.last_good`), else serves none (503) until a
good one appears; in a reload it keeps the one it serves. :attr:`ServedModel.state` says
which, and why the chosen model is not served (one sentence naming the file): what
``/health`` reports (serving/app.py).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lifecycle.core import paths
from lifecycle.core.errors import UserError
from lifecycle.inference import ModelIdentity, Predictor
from lifecycle.models import SIDECAR_FILE, WEIGHTS_FILE
import serving.metrics as metrics
from serving.last_good import LastGood, first_line, load_failure, load_folder
from tracking.mlflow_model import is_mlflow_source, load_model_source
from tracking.registry import Registry, RegistryUnavailable
from tracking.store import CHAMPION, REGISTERED_MODEL, existing_store

FROM_STORE = object()  # ServedModel's default registry: the tracking store's, if there is one

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """One resolved answer to "which model": what to load, what to show, why, and what identifies it."""

    load: str      # what load_model_source gets: a folder, or an immutable models:/name/N
    shown: str     # what /health and /metadata show as the source: models/best, models:/name@alias, ...
    reason: str    # one sentence: why this model
    key: tuple     # equal keys mean the same model files or registry version; a new key means reload


@dataclasses.dataclass(frozen=True)
class Served:
    """The predictor answering now and the choice it came from (swapped as one reference)."""

    choice: ModelChoice
    predictor: Predictor


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
    version = registry.alias_version(REGISTERED_MODEL, CHAMPION)
    if version is None:
        return ModelChoice(str(best), paths.relative(best), f"the tracking store {registry.shown} has no "
                           f"{REGISTERED_MODEL}@{CHAMPION}, so the selected model folder.", folder_key(best))
    return ModelChoice(f"models:/{REGISTERED_MODEL}/{version}", f"models:/{REGISTERED_MODEL}@{CHAMPION}",
                       f"the tracking store {registry.shown} has {REGISTERED_MODEL}@{CHAMPION} "
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
            raise UserError(f"SERVE_MODEL={requested}: the tracking store {registry.shown} has no model {name} "
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
    """The model one worker serves; :meth:`refresh` swaps in a newly promoted one without a pause.

    :attr:`state` is the served model (or None) and why the model chosen now is not the one
    served (or None), swapped as one reference.
    """

    def __init__(self, requested: str | None, predictor: Predictor | None = None,
                 load: Callable[[str], Predictor] = load_model_source, registry: Registry | None | object = FROM_STORE,
                 best: Path | None = None, last_good: LastGood | None = None) -> None:
        """``requested``: SERVE_MODEL (empty: the default). ``predictor``: serve this one, never reload.
        ``load``, ``registry`` and ``best`` replace the loader, the tracking store's registry and
        models/best (tests); ``last_good``: the service's copy of the last model that loaded
        (:mod:`serving.last_good`; None: this process only)."""
        self.requested = requested or None
        self.best = best
        self._load = load
        self.last_good = last_good
        self._failed_key: tuple | None = None
        self._given = predictor is not None
        if predictor is not None:  # given by the caller (tests, embedding): served as is, never reloaded
            identity = predictor.identity
            choice = ModelChoice(identity.source, identity.source, "given to create_app.", ("fixed", id(predictor)))
            self.registry = None
            self.state = State(Served(choice, predictor), None)
            return
        if registry is FROM_STORE:
            store = existing_store()
            registry = Registry(store) if store else None
        self.registry = registry
        self.state = State(None, None)
        choice = self._choose()
        if choice is not None and self._swap_in(choice):
            served = self.current
            log.info("serving %s (%s version %s): %s", choice.shown, served.predictor.identity.name,
                     served.predictor.identity.version, choice.reason)
            return
        fallback = self._from_last_good()
        self.state = State(fallback, self.state.failure)
        if fallback is None:
            log.error("no model to serve yet, answering 503 until one loads: %s", self.state.failure)
        else:
            log.warning("serving the last model that loaded, %s (%s version %s): %s", fallback.choice.shown,
                        fallback.predictor.identity.name, fallback.predictor.identity.version, self.state.failure)

    @property
    def current(self) -> Served | None:
        """The model answering now; None while no model has loaded."""
        return self.state.served

    @property
    def reloads(self) -> bool:
        if self._given:
            return False
        current = self.current
        return current is None or self.state.failure is not None or current.choice.key[0] != "fixed"

    def refresh(self) -> bool:
        """Load and swap in the model now chosen if it differs from the one served; True if it swapped.

        A registry that cannot be read, or a new model that fails to load, leaves the served
        model in place (logged once per failing model, and said by :attr:`state`), so a hiccup
        never takes the service down nor swaps in the fallback folder.
        """
        if not self.reloads:
            return False
        kept = self.current.choice.shown if self.current else "no model"
        choice = self._choose()
        if choice is None:
            log.warning("kept %s: %s", kept, self.state.failure)
            return False
        if self.current is not None and choice.key == self.current.choice.key:
            if self.state.failure is not None:  # the files that loaded are back (or the registry answers again)
                self.state = State(self.current, None)
                self._failed_key = None
            return False
        if choice.key == self._failed_key:
            return False
        old = self.current.predictor.identity if self.current else None
        if not self._swap_in(choice):
            log.warning("kept %s: the newly promoted %s did not load: %s", kept, choice.shown, self.state.failure)
            return False
        predictor = self.current.predictor
        was = f"{old.name} version {old.version}" if old else "no model"
        log.info("reloaded: now serving %s (%s version %s, was %s): %s", choice.shown,
                 predictor.identity.name, predictor.identity.version, was, choice.reason)
        return True

    def watch(self, every: float) -> threading.Thread | None:
        """Call :meth:`refresh` every ``every`` seconds in a daemon thread, until this object is gone."""
        if every <= 0 or self._given:
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

    def _choose(self) -> ModelChoice | None:
        """The model chosen now; None (and the reason in :attr:`state`) when it cannot be told."""
        try:
            return choose_model(self.requested, self.registry, self.best)
        except RegistryUnavailable as error:
            failure = (f"cannot read the model registry ({error}); set SERVE_MODEL=models/best to serve the "
                       f"selected model folder without it, or fix MLFLOW_TRACKING_URI.")
        except UserError as error:
            failure = str(error)
        self.state = State(self.current, failure)
        return None

    def _swap_in(self, choice: ModelChoice) -> bool:
        """Load ``choice`` and serve it (True); or keep the served model and record why it did not load."""
        try:
            predictor = self._loaded(choice)
        except Exception as error:  # a half-copied folder, a deleted version: keep answering with the old one
            metrics.RELOAD_FAILURES.inc()
            self._failed_key = choice.key
            self.state = State(self.current, load_failure(choice.shown, error))
            return False
        self._failed_key = None
        self.state = State(Served(choice, predictor), None)
        return True

    def _loaded(self, choice: ModelChoice) -> Predictor:
        folder = model_folder(choice)
        if folder is None or not all((folder / name).is_file() for name in (WEIGHTS_FILE, SIDECAR_FILE)):
            return _shown_as(self._load(choice.load), choice)  # an MLflow model, or a folder that says what it lacks

        def load(copy: Path) -> Predictor:
            return _shown_as(load_folder(self._load, copy, choice.shown), choice)

        if self.last_good is None:
            return load(folder)
        return self.last_good.load_copy(folder, choice.shown, load, lambda predictor: {
            "choice": dataclasses.asdict(choice), "identity": predictor.identity.to_dict()})

    def _from_last_good(self) -> Served | None:
        """The last model that loaded in this service (any worker), loaded from the service's copy; else None."""
        found = self.last_good.read() if self.last_good is not None else None
        if found is None:
            return None
        folder, record = found
        try:
            choice = ModelChoice(**{**record["choice"], "key": _as_tuple(record["choice"]["key"])})
            predictor = self._load(str(folder))
            identity = ModelIdentity(**record["identity"])
        except Exception as error:  # a copy removed meanwhile, or a record from another version of this code
            log.warning("could not load the last good model from %s: %s", folder, first_line(error))
            return None
        return Served(choice, Predictor(predictor.model, predictor.spec, identity, predictor.device))


@dataclasses.dataclass(frozen=True)
class State:
    """What one worker serves (None: no model yet) and, when the model chosen now did not load, why."""

    served: Served | None
    failure: str | None   # one sentence naming the model's file or source; None when the chosen model is served


def model_folder(choice: ModelChoice) -> Path | None:
    """The model folder a choice loads from; None for an MLflow model."""
    return Path(choice.load) if choice.key[0] == "folder" else None


def _shown_as(predictor: Predictor, choice: ModelChoice) -> Predictor:
    return Predictor(predictor.model, predictor.spec, dataclasses.replace(predictor.identity, source=choice.shown),
                     predictor.device)


def _as_tuple(value: Any) -> Any:
    """A key read back from JSON: lists to tuples, as folder_key and choose_model make them."""
    return tuple(_as_tuple(item) for item in value) if isinstance(value, list) else value
