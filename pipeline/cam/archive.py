"""The CAM archive: one compressed ``.npz`` per image with ``cams`` (K, H, W) float16 in [0, 1] for the
image's K labelled foreground classes and ``keys`` (K,) int16 holding their class indices (1-based, VOC
style, 0 being background), written atomically (:func:`pipeline.engine.atomic.atomic_path`)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.engine.atomic import atomic_path
from pipeline.errors import DataError


def save_cam(path: str | os.PathLike, cams: np.ndarray, keys: np.ndarray) -> None:
    """Save (K, H, W) CAMs in [0, 1] and their (K,) class indices as a compressed float16 npz."""
    cams = np.asarray(cams)
    keys = np.asarray(keys)
    if cams.ndim != 3 or keys.shape != (cams.shape[0],):
        raise ValueError(f"cams must be (K, H, W) with K keys, got {cams.shape} and {keys.shape}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, cams=cams.astype(np.float16), keys=keys.astype(np.int16))


def load_cam(path: str | os.PathLike, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (cams float32 (K, H, W), keys int64 (K,)) written by :func:`save_cam`.

    A missing, truncated, corrupt or malformed file (wrong arrays or shapes, non-finite values, keys outside
    0..``num_classes - 1`` (0 is the background channel of walked scores), duplicates) is a one-line :class:`DataError`
    naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CAM file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            cams, keys = data["cams"], data["keys"]
            cams, keys = cams.astype(np.float32), keys.astype(np.int64)
    except KeyError as exc:
        raise DataError(f"{path}: not a CAM file (missing array {exc})") from None
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, OSError, ValueError: all mean a bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: corrupt or truncated CAM file ({reason})") from None
    if cams.ndim != 3 or keys.shape != (cams.shape[0],):
        raise DataError(f"{path}: CAM file must hold cams (K, H, W) and K keys, got {cams.shape} and {keys.shape}")
    if not np.isfinite(cams).all():
        raise DataError(f"{path}: CAM file holds non-finite values")
    upper = 254 if num_classes is None else num_classes - 1
    if keys.size and (keys.min() < 0 or keys.max() > upper or np.unique(keys).size != keys.size):
        raise DataError(f"{path}: class keys {keys.tolist()} must be distinct and within 0..{upper}")
    return cams, keys


def cam_to_scores(cams: np.ndarray, keys: np.ndarray, num_classes: int) -> np.ndarray:
    """Scatter K labelled-class CAMs into a dense (num_classes, H, W) score array; background = 0."""
    scores = np.zeros((num_classes,) + cams.shape[1:], dtype=np.float32)
    scores[keys] = cams
    return scores
