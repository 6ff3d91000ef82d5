"""What every propagation method's relation labels start from: an image, its CAMs and their class keys,
checked once (:func:`checked_label_inputs`); ``IGNORE`` marks the cells a relation label leaves open."""
from __future__ import annotations

import numpy as np

from pipeline.errors import DataError

IGNORE = 255


def checked_label_inputs(caller: str, image, cams, keys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``image`` as uint8 (H, W, 3), ``cams`` as float32 (K, H, W), ``keys`` as int64 (K,) 1-based class
    indices below ``IGNORE``; a DataError naming ``caller`` otherwise."""
    image = np.asarray(image)
    cams = np.asarray(cams, dtype=np.float32)
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if cams.ndim != 3 or cams.shape[0] != keys.size:
        raise DataError(f"{caller}: cams must be (K, H, W) with K={keys.size} keys, got {cams.shape}")
    if image.dtype != np.uint8 or image.shape != cams.shape[1:] + (3,):
        raise DataError(f"{caller}: image must be uint8 {cams.shape[1:] + (3,)} to match the cams, "
                        f"got {image.dtype} {image.shape}")
    if keys.size and (keys.min() < 1 or keys.max() >= IGNORE):
        raise DataError(f"{caller}: keys must lie in [1, {IGNORE - 1}], got {keys.tolist()}")
    return image, cams, keys
