"""Split: stratified train / validation / test from a seed, with no image in two splits.

Rows are grouped by the hash of their decoded, resized pixels, so two files that are the
same picture (re-encoded, re-sized, converted) always land in the same split and the test
score never rewards memorisation.
"""
from __future__ import annotations

import hashlib

import numpy as np
from sklearn.model_selection import train_test_split

from lifecycle.core.errors import UserError
from lifecycle.core.schema import SplitParams

SPLIT_NAMES = ("train", "val", "test")


def content_groups(images: np.ndarray) -> np.ndarray:
    """An integer group per distinct pixel content."""
    digests = [hashlib.sha256(image.tobytes()).hexdigest() for image in images]
    _, groups = np.unique(np.array(digests), return_inverse=True)
    return groups


def split_indices(labels: np.ndarray, groups: np.ndarray, params: SplitParams, seed: int) -> dict[str, np.ndarray]:
    """Row indices of each split; stratified by label, whole groups at a time."""
    group_ids, first = np.unique(groups, return_index=True)
    group_labels = labels[first]
    counts = np.bincount(group_labels)
    if len(group_ids) < 10 or (counts[counts > 0] < 3).any():
        raise UserError(f"split needs at least 3 distinct images per class and 10 in all, found {len(group_ids)} ({counts.tolist()} per class).")
    holdout = params.val_fraction + params.test_fraction
    train_g, rest_g = train_test_split(group_ids, test_size=holdout, stratify=group_labels, random_state=seed)
    rest_labels = group_labels[np.searchsorted(group_ids, rest_g)]
    val_g, test_g = train_test_split(
        rest_g, test_size=params.test_fraction / holdout, stratify=rest_labels, random_state=seed
    )
    return {
        name: np.sort(np.flatnonzero(np.isin(groups, chosen)))
        for name, chosen in zip(SPLIT_NAMES, (train_g, val_g, test_g))
    }
