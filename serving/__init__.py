"""The /predict service: a Flask app over :class:`lifecycle.inference.Predictor`. No stage imports it.

Production: ``gunicorn -c serving/gunicorn.conf.py`` (threaded workers) behind nginx
(``serving/nginx.conf``, which holds slow clients); development: ``python -m serving``. The app itself:
:mod:`serving.app`; which model it serves and its hot reload: :mod:`serving.model_source`.
"""
import lifecycle  # noqa: F401  - first: OpenMP's passive wait and the CPU numerics mode, before torch loads
from serving.app import create_app

__all__ = ["create_app"]
