"""The /predict service: a Flask app over :class:`lifecycle.inference.Predictor`. No stage imports it.

Production: ``gunicorn -w 2 -b 127.0.0.1:8000 'serving:create_app()'``;
development: ``python -m serving``. The app itself: :mod:`serving.app`.
"""
import os as _os

# Before torch loads (the app's imports load it): idle OpenMP threads sleep instead of
# spinning, so two workers on a small machine do not steal each other's cores.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from serving.app import create_app  # noqa: E402

__all__ = ["create_app"]
