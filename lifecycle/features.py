"""Featurize (seed step 3): labels to integers and images to one compact uint8 array.

The ``LabelEncoder`` mapping (cat -> 0, dog -> 1) is saved beside the array and copied
into every model's sidecar, so training and serving agree on what index 1 means. Every
image is decoded and resized exactly once, here, through :mod:`lifecycle.core.images` (the
path serving and predict use too); no later stage opens an image file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.preprocessing import LabelEncoder

from lifecycle.core.errors import UserError
from lifecycle.core.images import load_array
from lifecycle.core.parallel import ordered_map
from lifecycle.core.progress import progress


def encode_labels(labels: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes and the class names in code order (alphabetical, as LabelEncoder does)."""
    present = sorted(set(labels.dropna()))
    if len(present) < 2:
        raise UserError(f"featurize needs images of at least two classes, found only: {', '.join(present) or 'none'}.")
    encoder = LabelEncoder()
    codes = encoder.fit_transform(labels.to_numpy(dtype=str)).astype(np.int64)
    return codes, [str(c) for c in encoder.classes_]


def decode_all(manifest: pd.DataFrame, raw_dir: Path, image_size: int) -> np.ndarray:
    """Decode and resize every image of ``manifest`` into one (N, S, S, 3) uint8 array, row i from row i.

    The images are decoded on every core (:func:`~lifecycle.core.parallel.ordered_map`), in order.
    """
    images = np.empty((len(manifest), image_size, image_size, 3), dtype=np.uint8)
    paths = manifest["image_path"].tolist()
    decoded = ordered_map(lambda name: load_array(raw_dir / name, image_size), paths)
    for i, array in enumerate(progress(decoded, desc="featurize: decoding images", total=len(paths))):
        images[i] = array
    return images
