"""The /predict service: a Flask app over :class:`lifecycle.inference.Predictor`. No stage imports it.

Production: ``gunicorn -c serving/gunicorn.conf.py`` (threaded workers with read and request
timeouts, :mod:`serving.worker`); development: ``python -m serving``. The app itself:
:mod:`serving.app`; which model it serves and its hot reload: :mod:`serving.model_source`.
"""
import os as _os

# Before torch loads (the app's imports load it): idle OpenMP threads sleep instead of
# spinning, so two workers on a small machine do not steal each other's cores.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import lifecycle  # noqa: E402,F401  - the CPU numerics mode (lifecycle/core/numerics.py), also before torch
from serving.app import create_app  # noqa: E402

__all__ = ["create_app"]
