"""Synthesize (seed step 4): balance the training split with synthetic minority images.

SMOTE interpolates between a minority image and one of its nearest minority neighbours,
pixel by pixel; ``random_over`` repeats minority images; ``none`` leaves the split as it
is. Only the training split is ever resampled, so validation and test scores stay honest;
every synthetic row is flagged so that plots and audits can tell it apart.
"""
from __future__ import annotations

import numpy as np
from imblearn.over_sampling import SMOTE, RandomOverSampler

from lifecycle.core.errors import UserError
from lifecycle.core.schema import SynthesizeParams


def make_sampler(params: SynthesizeParams, seed: int):
    """The imbalanced-learn sampler for ``params`` (None for ``none``); tune reuses it."""
    if params.method == "smote":
        return SMOTE(k_neighbors=params.k_neighbors, random_state=seed)
    if params.method == "random_over":
        return RandomOverSampler(random_state=seed)
    return None


def balance(images: np.ndarray, labels: np.ndarray, params: SynthesizeParams, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, labels and a synthetic flag after resampling; originals come first, unchanged."""
    sampler = make_sampler(params, seed)
    if sampler is None:
        return images, labels, np.zeros(len(labels), dtype=bool)
    smallest = int(np.bincount(labels).min())
    if params.method == "smote" and smallest <= params.k_neighbors:
        raise UserError(
            f"synthesize.k_neighbors is {params.k_neighbors} but the smallest class has only {smallest} training images; lower it."
        )
    flat = images.reshape(len(images), -1).astype(np.float32)
    resampled, new_labels = sampler.fit_resample(flat, labels)
    # imbalanced-learn appends new samples after the originals, in order.
    assert np.array_equal(resampled[: len(images)], flat)
    new_images = np.clip(np.rint(resampled), 0, 255).astype(np.uint8).reshape(-1, *images.shape[1:])
    synthetic = np.arange(len(new_labels)) >= len(labels)
    return new_images, new_labels.astype(np.int64), synthetic
