"""Side-by-side inspection overlays: image | CAM heat map | pseudo mask | ground truth | prediction.

Panel arrays are interpreted by type: float (H, W) or (K, H, W) = CAM scores in [0, 1] (max over
classes, jet colour map blended over the image); integer (H, W) = label map coloured with the VOC palette
(255 = the palette's entry 255); uint8 (H, W, 3) = an RGB picture shown as is. ``None`` panels are skipped.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.data.image_files import voc_palette
from pipeline.errors import DataError

TITLE_HEIGHT = 14
GAP = 4
HEAT_BLEND = 0.5  # weight of the heat map over the image
_PALETTE = voc_palette(256)


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (any shape) to uint8 RGB (..., 3) with the piecewise-linear "jet" colour map
    (dark blue -> blue -> cyan -> yellow -> red -> dark red)."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0], dtype=np.float32)  # red, green, blue peak at 3/4, 1/2, 1/4
    rgb = np.clip(1.5 - np.abs(4.0 * v - centres), 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def _label_map(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
        raise DataError(f"overlay: a mask panel must be (H, W) with values 0..255, got shape {mask.shape}")
    return mask.astype(np.uint8)


def colorize_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) integer label map -> (H, W, 3) uint8 RGB in VOC palette colours (255 -> palette entry 255)."""
    return _PALETTE[_label_map(mask)]


def heatmap(image: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """Jet heat map of max-over-classes CAM scores, blended over ``image`` (both at the image size)."""
    cams = np.asarray(cams, dtype=np.float32)
    if cams.ndim == 3:
        cams = cams.max(axis=0) if cams.shape[0] else np.zeros(cams.shape[1:], np.float32)
    if cams.ndim != 2:
        raise DataError(f"overlay: a CAM panel must be (H, W) or (K, H, W), got shape {cams.shape}")
    cams = _resize(cams, image.shape[:2], Image.BILINEAR)
    blended = HEAT_BLEND * jet_colormap(cams).astype(np.float32) + (1 - HEAT_BLEND) * image.astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _resize(array: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    if array.shape[:2] == size:
        return array
    resized = Image.fromarray(np.ascontiguousarray(array)).resize((size[1], size[0]), resample=resample)
    return np.asarray(resized)


def _render(image: np.ndarray, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    size = image.shape[:2]
    if np.issubdtype(array.dtype, np.floating):
        return heatmap(image, array)
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        return _resize(array, size, Image.BILINEAR)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        return colorize_mask(_resize(_label_map(array), size, Image.NEAREST))
    raise DataError(f"overlay: cannot show a panel of dtype {array.dtype} and shape {array.shape}")


def make_overlay(image: np.ndarray, panels: Sequence[tuple[str, np.ndarray | None]],
                 image_title: str = "image") -> np.ndarray:
    """Compose the image and the given panels side by side, each under a small title; uint8 RGB.

    Output height = TITLE_HEIGHT + H, width = n * W + (n - 1) * GAP for n shown panels (the image first).
    Panels whose array is ``None`` are skipped; others are resized to the image size.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"overlay: image must be (H, W, 3), got shape {image.shape}")
    image = image.astype(np.uint8)
    tiles = [(image_title, image)]
    tiles += [(title, _render(image, array)) for title, array in panels if array is not None]
    height, width = image.shape[:2]
    canvas = np.full((TITLE_HEIGHT + height, len(tiles) * width + (len(tiles) - 1) * GAP, 3), 255, np.uint8)
    for index, (_, tile) in enumerate(tiles):
        left = index * (width + GAP)
        canvas[TITLE_HEIGHT:, left:left + width] = tile
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    for index, (title, _) in enumerate(tiles):
        draw.text((index * (width + GAP) + 2, 1), title, fill=(0, 0, 0), font=font)
    # Titles may overrun into the next column; keep every image area exactly as rendered.
    result = np.asarray(picture).copy()
    result[TITLE_HEIGHT:] = canvas[TITLE_HEIGHT:]
    return result
