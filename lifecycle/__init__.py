"""The pipeline library: what the stages in ``stages/`` import, and nothing else does but the
serving app (``serving/``), the MLflow mirror (``tracking/``), tests and benchmarks.

``core/`` is what every stage needs (dvc.yaml lists it as one folder); every other module is
one concern (sources, cleaning, features, ..., training/, evaluation, inference), listed per
file by the stages that import it. tests/test_dvc_graph.py proves that every stage's deps
cover every module it imports.
"""
