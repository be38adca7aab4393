"""Class counts as the reports show them: ``{"cat": 980, "dog": 420}``, in class-code order.

split, synthesize and their metrics files use it, so every report counts the same way.
"""
from __future__ import annotations

import numpy as np


def class_counts(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(classes))
    return {name: int(count) for name, count in zip(classes, counts)}
