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
    """Images, labels and a synthetic flag after resampling; originals come first, unchanged.

    The result is what ``make_sampler(params, seed).fit_resample`` gives on the flattened
    images, computed without its memory: random over-sampling copies uint8 rows as they
    are, and SMOTE, which only ever interpolates between images of one class, is run on
    each minority class's images alone (as float32, which imbalanced-learn needs), so that
    25,000 Kaggle photos never become one float copy of the whole training split, and a
    balanced split costs nothing.
    """
    sampler = make_sampler(params, seed)
    if sampler is None:
        return images, labels, np.zeros(len(labels), dtype=bool)
    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min())
    if params.method == "smote" and smallest <= params.k_neighbors:
        raise UserError(
            f"synthesize.k_neighbors is {params.k_neighbors} but the smallest class has only {smallest} training images; lower it."
        )
    flat = images.reshape(len(images), -1)
    if params.method == "random_over":
        resampled, new_labels = sampler.fit_resample(flat, labels)
        # The synthetic flag below counts on imbalanced-learn keeping the originals first, in order.
        if not np.array_equal(resampled[: len(flat)], flat):
            raise ValueError("imbalanced-learn's RandomOverSampler did not return the original images first and "
                             "in order, so the synthetic rows cannot be told apart; check its version.")
        new_images = resampled.reshape(-1, *images.shape[1:])
    else:
        new_images, new_labels = _smote_by_class(sampler, flat, labels, counts)  # originals first by construction
        new_images = new_images.reshape(-1, *images.shape[1:])
    synthetic = np.arange(len(new_labels)) >= len(labels)
    return new_images, new_labels.astype(np.int64), synthetic


def _smote_by_class(sampler, flat: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SMOTE's rows for ``flat`` (uint8, one row per image), one minority class at a time.

    imbalanced-learn's SMOTE draws each class's samples from a fresh generator seeded with
    ``random_state`` and from that class's rows only, so running it on one class's rows
    (plus one row of the majority class, which it requires and never uses) with that class's
    target count gives the very rows a run on the whole split gives.
    """
    target = int(counts.max())
    majority_row = int(np.flatnonzero(labels == int(np.argmax(counts)))[0])
    rows, row_labels = [flat], [labels]
    for code in np.flatnonzero((counts > 0) & (counts < target)):
        members = np.flatnonzero(labels == code)
        subset = np.concatenate([members, [majority_row]])
        sampler.set_params(sampling_strategy={int(code): target})
        resampled, new_labels = sampler.fit_resample(flat[subset].astype(np.float32), labels[subset])
        rows.append(np.clip(np.rint(resampled[len(subset):]), 0, 255).astype(np.uint8))
        row_labels.append(new_labels[len(subset):])
    return np.concatenate(rows), np.concatenate(row_labels)
