"""The pipeline library: what the stages in ``stages/`` import, and nothing else does but the
serving app (``serving/``), the MLflow mirror (``tracking/``), tests and benchmarks.

``core/`` is what every stage needs (dvc.yaml lists it as one folder); every other module is
one concern (sources, cleaning, features, ..., training/, evaluation, inference), listed per
file by the stages that import it. tests/test_dvc_graph.py proves that every stage's deps
cover every module it imports.

Importing the package sets OpenMP's wait policy to passive before any module here loads
torch, once for every entry point (the stages, the server, the benchmarks and the tests all
import this package first): by default OpenMP threads spin while they wait, and on a machine
whose cores are shared (two cores, several jobs) a training step then took 5 times the wall
time (880 ms instead of 170 ms for a seed-CNN step at load average 4.5; see docs/models.md).
It changes no result. A value already in the environment wins.

It then applies the CPU numerics mode (:mod:`lifecycle.core.numerics`: ``native`` or
``portable``, from ``$LIFECYCLE_NUMERICS`` or params.yaml's ``numerics``), whose switches the
numeric libraries also read only when they load. An unknown mode stops here with one sentence.
"""
import os as _os

from lifecycle.core import numerics as _numerics

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
try:
    _numerics.apply()
except ValueError as _error:
    raise SystemExit(f"error: {_error}") from None
