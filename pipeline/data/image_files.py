"""Image and label files: 8-bit palette PNG masks with the VOC colour map (value = class index, 255 =
ignore / void), and RGB images, read whatever their mode and written atomically
(:func:`pipeline.engine.atomic.atomic_path`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from pipeline.engine.atomic import atomic_path
from pipeline.errors import DataError


def voc_palette(num_entries: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map as a (num_entries, 3) uint8 array (bit-interleaved class index)."""
    palette = np.zeros((num_entries, 3), dtype=np.uint8)
    for index in range(num_entries):
        c, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[index] = (r, g, b)
    return palette


_PALETTE = voc_palette().flatten().tolist()


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Save an (H, W) uint8 label map as a VOC-palette PNG (255 = ignore)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(_PALETTE)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _read(path: str | os.PathLike, what: str, convert: Callable[[Image.Image, Path], np.ndarray]) -> np.ndarray:
    """``convert`` of the opened image file ``path``; a missing or unreadable file is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        with Image.open(path) as image:
            return convert(image, path)
    except DataError:
        raise
    except OSError as exc:
        raise DataError(f"{path}: unreadable {what} ({exc})") from None


def _label_array(image: Image.Image, path: Path) -> np.ndarray:
    if image.mode not in ("P", "L"):
        raise DataError(f"{path}: mask must be a palette or greyscale PNG, got mode {image.mode}")
    return np.array(image, dtype=np.uint8)


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG (palette or grey) as an (H, W) uint8 array of class indices."""
    return _read(path, "mask", _label_array)


_EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


def image_to_rgb(image: Image.Image, path: str | os.PathLike) -> np.ndarray:
    """An opened image as (H, W, 3) uint8 RGB. 16-bit greyscale (PNG modes ``I;16*``, or ``I`` within
    0..65535) is scaled to 8 bits (v / 257, rounded), not clipped to white as ``convert("RGB")`` would;
    any other mode (float, 32-bit) is a DataError naming ``path``."""
    mode = image.mode
    if mode in _EIGHT_BIT_MODES:
        return np.array(image.convert("RGB"), dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        values = np.array(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"{path}: image mode {mode} with values outside 0..65535 is not supported; "
                            "convert it to 8-bit RGB")
        grey = np.rint(values / 257.0).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    raise DataError(f"{path}: image mode {mode} is not supported; convert it to 8-bit RGB")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as an (H, W, 3) uint8 RGB array (see :func:`image_to_rgb` for the modes)."""
    return _read(path, "image", image_to_rgb)


def save_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> None:
    """Save an (H, W, 3) uint8 RGB array; format from the suffix (JPEG or PNG)."""
    fmt = "JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format=fmt, quality=quality)
