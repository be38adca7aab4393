"""Serving (seed step 9): the Flask service that answers real-time predictions.

in: the selected model (``models/best`` or an MLflow model URI, see :mod:`lifecycle.inference`)
and HTTP requests.  out: JSON answers and a small upload page.

    POST /predict   multipart field ``image`` (repeat it for a batch) -> JSON
    GET  /          the upload page (static/index.html, no external resources)
    GET  /health/live   200 while the process runs (liveness)
    GET  /health/ready  200 when a model is served ("ok", or "degraded" with the problem when the
                    chosen model did not load and the last good one answers), 503 when none is
                    (readiness); which model is served, from where and why
    GET  /health    the same answer as /health/ready (the URL clients already use)
    GET  /metadata  model identity, classes, image size, normalisation, metrics, limits
    POST /feedback  JSON ``{"request_id": ..., "label": ...}``: what a served image really was
    GET  /metrics   Prometheus text: requests, latency, images, predictions, model, failures

Every /predict answer carries a ``request_id``. Each image it answered becomes one record of
the prediction log (``SERVE_LOG_DIR``, default ``served/``; :mod:`lifecycle.prediction_log`):
who answered, the image's sha256, size and statistics, the model's projected embedding and
its answer; no pixels unless ``SERVE_KEEP_IMAGES``. A background thread writes it, so a slow
or refusing disk never slows or fails an answer (the loss is counted in /metrics). The
``monitor`` stage reads it for drift, and feedback labels make it training data
(docs/monitoring.md).

Every answer names the model that produced it: in the JSON of /predict, /health and
/metadata, and in the ``X-Model-Name`` / ``X-Model-Version`` headers of every response.
Which model, and the hot reload of a newly promoted one: :mod:`serving.model_source`.

Production: ``gunicorn -c serving/gunicorn.conf.py`` behind nginx (``serving/nginx.conf``, which
buffers whole requests, so slow clients never hold a worker); see docs/serving.md.
Development: ``python -m serving`` (127.0.0.1:5000, never debug mode).

A model that does not load never stops the service (:mod:`serving.model_source`): /predict and
/metadata answer 503 with a JSON ``error`` while no model is loaded, and readiness says why.

Bad input is the client's mistake and always gets a 4xx with a JSON ``error`` sentence that
says what was wrong: 400 for a request without a usable ``image`` field or with too many
images, 413 for an upload over the byte limit or an image over the pixel limit (checked
from the header, before decoding), 422 for a file that is not a readable image. Limits come
from app config, else environment variables, else the defaults below (:class:`Settings`).
"""
from __future__ import annotations

import datetime
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flask import Flask, g, jsonify, request, send_from_directory
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from lifecycle import prediction_log
from lifecycle.core import paths
from lifecycle.core.errors import UserError
from lifecycle.core.images import DEFAULT_MAX_PIXELS, ImageDecodeError, ImageTooLargeError
from lifecycle.inference import Predictor
import serving.metrics as metrics
from serving.last_good import LastGood
from serving.model_source import ServedModel, State

STATIC = Path(__file__).with_name("static")
log = logging.getLogger(__name__)


class Settings(BaseSettings):
    """The service's settings: ``create_app``'s config, else the environment variable ``SERVE_<NAME>``
    (empty counts as unset), else the default. gunicorn's (bind ... pidfile) are read by serving/gunicorn.conf.py."""

    model_config = SettingsConfigDict(env_prefix="SERVE_", env_ignore_empty=True)

    model: str = ""                                        # model folder or MLflow URI; empty: serving/model_source.py chooses
    max_upload_bytes: int = Field(16 * 1024 * 1024, gt=0)  # bytes in one request (413 above)
    max_images: int = Field(16, gt=0)                      # images in one request (400 above)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0)      # pixels in one image, from its header (413 above)
    torch_threads: int = Field(0, ge=0)                    # torch threads per worker; 0: torch's default
    reload_seconds: int = Field(10, ge=0)                  # seconds between checks for a promoted model; 0: never
    log_dir: Path = paths.SERVED                           # the prediction log, feedback labels, kept images
    prediction_log: bool = True                            # write the prediction log (off only to measure its cost)
    log_max_bytes: int = Field(10 * 1024 * 1024, gt=0)     # a log file is rotated before it passes this size
    log_backups: int = Field(10, ge=0)                     # rotated log files kept; older ones are removed
    keep_images: bool = False                              # keep each uploaded image in <log_dir>/images/<sha256>
    bind: str = "127.0.0.1:8001"                           # gunicorn's address: serving/nginx.conf's upstream
    workers: int = Field(2, gt=0)                          # gunicorn worker processes, each with its own model
    threads: int = Field(32, gt=0)                         # requests a worker answers at once
    pidfile: str = ""                                      # gunicorn's master writes its process id here


FLASK_NAMES = {"MAX_CONTENT_LENGTH": "max_upload_bytes"}  # create_app's keys that are Flask's; the others: SERVE_<NAME>


def load_settings(config: dict[str, Any] | None = None) -> Settings:
    """The settings, ``config``'s keys over the environment's; a bad value is a UserError naming its key or variable."""
    config = config or {}
    fields = {key: FLASK_NAMES.get(key) or key.removeprefix("SERVE_").lower() for key in config}
    named = {field: key for key, field in fields.items() if field in Settings.model_fields}  # field -> config key
    try:
        return Settings(**{field: config[key] for field, key in named.items()})
    except ValidationError as error:
        problem = error.errors()[0]
        field = str(problem["loc"][0])
        variable = f"SERVE_{field.upper()}"
        what = (f"app config {named[field]}={config[named[field]]!r}" if field in named
                else f"environment variable {variable}={os.environ.get(variable)!r}")
        raise UserError(f"{what} is not valid: {problem['msg'][0].lower()}{problem['msg'][1:]}.") from None


class BadRequest(Exception):
    """A client mistake: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# The model's scores /metadata reports: select writes them into the sidecar's info, per split.
HELD_OUT_SPLITS = ("val", "test")


def create_app(config: dict[str, Any] | None = None, predictor: Predictor | None = None) -> Flask:
    """The Flask app serving ``predictor``, else ``SERVE_MODEL``, else the default (:mod:`serving.model_source`)."""
    settings = load_settings(config)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    served = ServedModel(settings.model or None, predictor, last_good=LastGood.from_environment())

    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config.update(config or {})
    app.config.update(MAX_CONTENT_LENGTH=settings.max_upload_bytes, DEBUG=False)
    app.json.sort_keys = False
    app.extensions["served_model"] = served
    served.watch(settings.reload_seconds)
    writer = None
    if settings.prediction_log:
        writer = prediction_log.PredictionLog(settings.log_dir, settings.log_max_bytes, settings.log_backups,
                                              on_failure=_log_failed)
    app.extensions["prediction_log"] = writer

    _register_routes(app, served, settings)
    _register_errors(app)
    return app


def _log_failed(count: int, error: BaseException | None) -> None:
    metrics.LOG_FAILURES.inc(count)
    log.warning("prediction log: %d record(s) not written: %s", count, error or "the writer's queue is full")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _short_identity(predictor: Predictor) -> dict[str, str]:
    return {"name": predictor.identity.name, "version": predictor.identity.version}


def readiness(state: State) -> tuple[dict[str, Any], int]:
    """The body and status of /health/ready (and /health): ok, degraded (200) or unavailable (503)."""
    served = state.served
    if served is None:
        why = (state.failure or "no model has loaded yet.").rstrip(".")
        return {"status": "unavailable", "model": None,
                "problem": f"{why}; no model is loaded, so this worker answers 503 until a loadable one appears."}, 503
    identity = served.predictor.identity
    body: dict[str, Any] = {"status": "ok", "model": {**_short_identity(served.predictor), "source": identity.source},
                            "source_reason": served.choice.reason}
    if state.failure is not None:
        body["status"] = "degraded"
        body["problem"] = (f"{state.failure.rstrip('.')}; serving the last model that loaded instead "
                           f"({identity.name} version {identity.version}).")
    return body, 200


class NoModel(Exception):
    """No model is loaded: /predict and /metadata answer 503 with the reason."""


def _register_routes(app: Flask, served: ServedModel, settings: Settings) -> None:
    writer: prediction_log.PredictionLog | None = app.extensions["prediction_log"]

    @app.before_request
    def pin_model():
        # One model per request, even if a reload swaps it meanwhile: the answer names the one that computed it.
        g.started = time.perf_counter()
        g.state = served.state
        g.served = g.state.served

    def model() -> Predictor:
        if g.served is None:
            raise NoModel(readiness(g.state)[0]["problem"])
        return g.served.predictor

    @app.after_request
    def model_and_security_headers(response):
        current = g.served if "served" in g else served.current
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.REQUESTS.labels(route, str(response.status_code)).inc()
        if "started" in g:
            metrics.LATENCY.labels(route).observe(time.perf_counter() - g.started)
        if current is not None:
            identity = current.predictor.identity
            metrics.serving(identity.name, identity.version, identity.source)
            response.headers["X-Model-Name"] = current.predictor.identity.name
            response.headers["X-Model-Version"] = current.predictor.identity.version
        elif response.status_code == 503 and settings.reload_seconds:
            response.headers["Retry-After"] = str(settings.reload_seconds)
        # The page loads nothing from elsewhere; previews are blob: URLs of the user's own file.
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.get("/")
    def index():
        return send_from_directory(STATIC, "index.html")

    @app.get("/health")
    @app.get("/health/ready")
    def health():
        body, status = readiness(g.state)
        return jsonify(body), status

    @app.get("/health/live")
    def live():
        return jsonify({"status": "alive"})

    @app.get("/metadata")
    def metadata():
        predictor = model()
        spec = predictor.spec
        info = spec.info or {}
        return jsonify({
            "model": predictor.identity.to_dict(),
            "source_reason": g.served.choice.reason,
            "architecture": spec.architecture,
            "classes": predictor.classes,
            "image_size": spec.image_size,
            "mean": list(spec.mean),
            "std": list(spec.std),
            "metrics": {split: info[split] for split in HELD_OUT_SPLITS if split in info},
            "info": info,
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_images": settings.max_images,
                "max_pixels": settings.max_pixels,
            },
        })

    @app.post("/predict")
    def predict():
        predictor = model()
        uploads = _uploads(settings.max_images)
        images = np.stack([_decode(predictor, data, name, len(uploads), settings.max_pixels) for name, data in uploads])
        probabilities, embeddings = predictor.predict_and_embed(images)
        answers = [predictor.describe(p) for p in probabilities]
        request_id = uuid.uuid4().hex
        metrics.IMAGES.observe(len(answers))
        for answer in answers:
            metrics.PREDICTIONS.labels(answer["label"]).inc()
        if writer is not None:  # the records are made on the writer's thread, not this request's
            identity, now = predictor.identity, _now()
            model_fields = {"name": identity.name, "version": identity.version, "source": identity.source,
                            "digest": identity.digest or ""}

            def build() -> tuple[list[dict[str, Any]], dict[str, bytes]]:
                records = prediction_log.records(request_id, now, model_fields, uploads, images, answers, embeddings)
                kept = {r["sha256"]: data for r, (_, data) in zip(records, uploads)} if settings.keep_images else {}
                return records, kept

            writer.submit_later(build, len(answers))
        if len(answers) == 1:
            return jsonify({**answers[0], "request_id": request_id, "model": _short_identity(predictor)})
        return jsonify({
            "request_id": request_id,
            "predictions": [{"filename": name, **answer} for (name, _), answer in zip(uploads, answers)],
            "model": _short_identity(predictor),
        })

    @app.post("/feedback")
    def feedback():
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("request_id"), str) or not isinstance(body.get("label"), str):
            raise BadRequest('send JSON {"request_id": "<id from /predict>", "label": "<the true class>"}.')
        request_id, label = body["request_id"].strip(), body["label"].strip()
        if writer is not None:
            writer.flush(timeout=2.0)  # this worker's answers still on their way to the log
        try:
            images = prediction_log.label_request(settings.log_dir, request_id, label, "api", _now())
        except prediction_log.LabelRefused as refused:
            raise BadRequest(str(refused), refused.status) from None
        return jsonify({"request_id": request_id, "label": label, "images": images})

    @app.get("/metrics")
    def prometheus():
        text, content_type = metrics.exposition()
        return text, 200, {"Content-Type": content_type}


def _uploads(max_images: int) -> list[tuple[str, bytes]]:
    """The files of the multipart field ``image`` as (filename, bytes), or a BadRequest."""
    if request.mimetype != "multipart/form-data":
        sent = request.mimetype or "no body"
        raise BadRequest(f"send the image as multipart/form-data in the field 'image' (this request was {sent}).")
    files = request.files.getlist("image")  # reads the body from the client
    if not files:
        other = sorted(set(request.files) | set(request.form))
        hint = f"; the request had only: {', '.join(repr(n) for n in other)}" if other else ""
        raise BadRequest(f"missing the multipart file field 'image'{hint}.")
    if len(files) > max_images:
        raise BadRequest(f"too many images: {len(files)} in one request, at most {max_images}.")
    return [(f.filename or "", f.read()) for f in files]


def _decode(predictor: Predictor, data: bytes, filename: str, count: int, max_pixels: int) -> np.ndarray:
    which = f"'{filename}'" if filename else "the upload"
    which = f"field 'image' ({which})" if count == 1 else f"image {which}"
    if not data:
        raise BadRequest(f"{which} is empty.")
    try:
        return predictor.preprocess(data, max_pixels=max_pixels)  # the pixel cap is checked before decoding
    except ImageTooLargeError as error:
        raise BadRequest(f"{which} is too large: {error}.", 413) from None
    except ImageDecodeError as error:
        raise BadRequest(f"{which} is not a readable image: {error}.", 422) from None


def _register_errors(app: Flask) -> None:
    @app.errorhandler(BadRequest)
    def bad_request(error: BadRequest):
        return jsonify({"error": error.message}), error.status

    @app.errorhandler(NoModel)
    def no_model(error: NoModel):
        return jsonify({"error": str(error)}), 503

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge):
        limit = app.config["MAX_CONTENT_LENGTH"]
        if request.content_length is None or request.content_length > limit:
            return jsonify({"error": f"the upload is over the limit of {limit} bytes per request."}), 413
        # Werkzeug's own form limits: a text field over MAX_FORM_MEMORY_SIZE, or too many parts
        return jsonify({"error": f"the form is too large: {error.description}"}), 413

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return jsonify({"error": f"{error.name}: {error.description}"}), error.code

    @app.errorhandler(Exception)
    def unexpected(error: Exception):  # a bug, not the client's fault: log it, answer JSON
        log.exception("unexpected error on %s %s", request.method, request.path)
        return jsonify({"error": "internal error; the server log has the details."}), 500
