"""Featurize (seed step 3): labels to integers and images to one compact uint8 array.

The ``LabelEncoder`` mapping (cat -> 0, dog -> 1) is saved beside the array and copied
into every model's sidecar, so training and serving agree on what index 1 means. Every
image is decoded and resized exactly once, here, through :mod:`lifecycle.core.images` (the
path serving and predict use too); no later stage opens an image file.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from lifecycle.core.errors import UserError
from lifecycle.core.images import load_array
from lifecycle.core.parallel import ordered_map
from lifecycle.core.paths import relative
from lifecycle.core.progress import progress


def encode_labels(labels: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes and the class names in code order (alphabetical, as LabelEncoder does)."""
    present = sorted(set(labels.dropna()))
    if len(present) < 2:
        raise UserError(f"featurize needs images of at least two classes, found only: {', '.join(present) or 'none'}.")
    from sklearn.preprocessing import LabelEncoder  # here: 1 s of import, for one small call

    encoder = LabelEncoder()
    codes = encoder.fit_transform(labels.to_numpy(dtype=str)).astype(np.int64)
    return codes, [str(c) for c in encoder.classes_]


def decode_all(manifest: pd.DataFrame, raw_dir: Path, image_size: int) -> np.ndarray:
    """Decode and resize every image of ``manifest`` into one (N, S, S, 3) uint8 array, row i from row i.

    Each file must still hold the bytes preprocess hashed into the manifest's ``sha256``
    column: the manifest pins every image, which is why dvc.yaml lists it, and not the
    folder of images (25,000 files DVC would otherwise walk again on every ``dvc status``),
    as featurize's input. The images are decoded on every core, in order
    (:func:`~lifecycle.core.parallel.ordered_map`).
    """
    images = np.empty((len(manifest), image_size, image_size, 3), dtype=np.uint8)
    rows = list(zip(manifest["image_path"].tolist(), manifest["sha256"].tolist()))
    decoded = ordered_map(lambda row: _load_pinned(raw_dir, *row, image_size), rows)
    for i, array in enumerate(progress(decoded, desc="featurize: decoding images", total=len(rows))):
        images[i] = array
    return images


def _load_pinned(raw_dir: Path, name: str, sha256: str, image_size: int) -> np.ndarray:
    path = raw_dir / name
    try:
        data = path.read_bytes()
    except OSError:
        data = None
    if data is None or hashlib.sha256(data).hexdigest() != sha256:
        raise UserError(f"{relative(path)} is missing or has changed since preprocess hashed it; "
                        f"rerun the pipeline from ingest (dvc repro).")
    return load_array(data, image_size)
