"""Serving (seed step 9): the Flask service that answers real-time predictions.

in: the selected model (``models/best`` or an MLflow model URI, see :mod:`lifecycle.inference`)
and HTTP requests.  out: JSON answers and a small upload page.

    POST /predict   multipart field ``image`` (repeat it for a batch) -> JSON
    GET  /          the upload page (static/index.html, no external resources)
    GET  /health    liveness, and which model is loaded
    GET  /metadata  model identity, classes, image size, normalisation, metrics, limits

Production: ``gunicorn -w 2 -b 127.0.0.1:8000 'serving:create_app()'``.
Development: ``python -m serving`` (127.0.0.1:5000, never debug mode).

Bad input is the client's mistake and always gets a 4xx with a JSON ``error`` sentence that
says what was wrong: 400 for a request without a usable ``image`` field or with too many
images, 413 for an upload over the byte limit or an image over the pixel limit (checked
from the header, before decoding), 422 for a file that is not a readable image. Limits come
from app config, else environment variables, else the defaults below (see :data:`SETTINGS`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flask import Flask, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from lifecycle.core.errors import UserError
from lifecycle.core.images import ImageDecodeError, ImageTooLargeError
from lifecycle.inference import Predictor, load_predictor

STATIC = Path(__file__).with_name("static")

# app.config key: (environment variable, type, default, what it limits)
SETTINGS: dict[str, tuple[str, type, Any, str]] = {
    "SERVE_MODEL": ("SERVE_MODEL", str, "", "model folder or MLflow URI; empty: models/best"),
    "MAX_CONTENT_LENGTH": ("SERVE_MAX_UPLOAD_BYTES", int, 16 * 1024 * 1024, "bytes in one request (413 above)"),
    "SERVE_MAX_IMAGES": ("SERVE_MAX_IMAGES", int, 16, "images in one request (400 above)"),
    "SERVE_MAX_PIXELS": ("SERVE_MAX_PIXELS", int, 40_000_000, "pixels in one image, from its header (413 above)"),
    "SERVE_TORCH_THREADS": ("SERVE_TORCH_THREADS", int, 0, "torch threads per worker; 0: torch's default"),
}

log = logging.getLogger(__name__)


class BadRequest(Exception):
    """A client mistake: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def load_settings(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, overridden by environment variables, overridden by ``overrides``; validated."""
    settings: dict[str, Any] = {}
    for key, (variable, kind, default, _) in SETTINGS.items():
        value: Any = default
        if os.environ.get(variable, "") != "":
            raw = os.environ[variable]
            try:
                value = kind(raw)
            except ValueError:
                raise UserError(f"environment variable {variable}={raw!r} must be an integer.") from None
        if overrides and key in overrides:
            value = overrides[key]
        if kind is int and (not isinstance(value, int) or value < 0 or (value == 0 and key != "SERVE_TORCH_THREADS")):
            raise UserError(f"{key} (environment variable {variable}) must be a positive integer, got {value!r}.")
        settings[key] = value
    return settings


def create_app(config: dict[str, Any] | None = None, predictor: Predictor | None = None) -> Flask:
    """The Flask app serving ``predictor`` (default: load ``SERVE_MODEL``, i.e. models/best)."""
    settings = load_settings(config)
    if settings["SERVE_TORCH_THREADS"]:
        torch.set_num_threads(settings["SERVE_TORCH_THREADS"])
    predictor = predictor or load_predictor(settings["SERVE_MODEL"] or None)

    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config.update({k: v for k, v in (config or {}).items() if k not in settings})
    app.config.update(settings)
    app.config["DEBUG"] = False
    app.json.sort_keys = False
    app.extensions["predictor"] = predictor

    _register_routes(app, predictor)
    _register_errors(app)
    log.info("serving %s (%s %s)", predictor.identity.source, predictor.identity.name, predictor.identity.version)
    return app


def _register_routes(app: Flask, predictor: Predictor) -> None:
    identity = predictor.identity.to_dict()
    short_identity = {"name": identity["name"], "version": identity["version"]}

    @app.after_request
    def security_headers(response):
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
    def health():
        return jsonify({"status": "ok", "model": short_identity})

    @app.get("/metadata")
    def metadata():
        spec = predictor.spec
        info = spec.info or {}
        return jsonify({
            "model": identity,
            "architecture": spec.architecture,
            "classes": predictor.classes,
            "image_size": spec.image_size,
            "mean": list(spec.mean),
            "std": list(spec.std),
            "metrics": info.get("metrics", {}),
            "info": info,
            "limits": {
                "max_upload_bytes": app.config["MAX_CONTENT_LENGTH"],
                "max_images": app.config["SERVE_MAX_IMAGES"],
                "max_pixels": app.config["SERVE_MAX_PIXELS"],
            },
        })

    @app.post("/predict")
    def predict():
        uploads = _uploads(app.config["SERVE_MAX_IMAGES"])
        images = [_decode(predictor, data, name, len(uploads), app.config["SERVE_MAX_PIXELS"])
                  for name, data in uploads]
        answers = [predictor.describe(p) for p in predictor.predict(np.stack(images))]
        if len(answers) == 1:
            return jsonify({**answers[0], "model": short_identity})
        return jsonify({
            "predictions": [{"filename": name, **answer} for (name, _), answer in zip(uploads, answers)],
            "model": short_identity,
        })


def _uploads(max_images: int) -> list[tuple[str, bytes]]:
    """The files of the multipart field ``image`` as (filename, bytes), or a BadRequest."""
    if request.mimetype != "multipart/form-data":
        sent = request.mimetype or "no body"
        raise BadRequest(f"send the image as multipart/form-data in the field 'image' (this request was {sent}).")
    files = request.files.getlist("image")
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
