"""Scribble annotations: the ScribbleSup reader and a deterministic generator for datasets without them.

- Reader: ScribbleSup (Lin et al., CVPR 2016) as distributed with the regularised-loss papers: one
  greyscale PNG per image in ``pascal_2012_scribble/`` beside ``JPEGImages/``, value = class index
  (0 = background), 255 = unlabelled; strokes about 3 px wide, about 3% of the pixels.
- Generator (the usual stand-in where no scribbles exist): for every connected ground-truth region of
  every class, background included (void 255 is never labelled), a thin stroke along the region's
  skeleton (scikit-image ``skeletonize``). The stroke starts at a random skeleton pixel and follows the
  skeleton breadth-first (8-neighbours) for about ``coverage * area / width`` pixels, then is thickened to
  ``width`` pixels (a disc of radius width // 2) and clipped to the region, so a stroke never leaves its
  region and about ``coverage`` of each region is labelled. Every region gets at least one skeleton pixel.
  The random generator is seeded by (seed, CRC32 of the image id): the same scribbles for the same seed,
  whatever the order or the number of worker processes.
"""
from __future__ import annotations

import math
import zlib
from collections import deque
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.morphology import disk, skeletonize

from pipeline.data.image_files import load_mask
from pipeline.errors import ConfigError, DataError

SCRIBBLE_DIR = "pascal_2012_scribble"
IGNORE_INDEX = 255
_EIGHT = np.ones((3, 3), dtype=bool)


def scribble_dir(root: str | Path) -> Path:
    """``<root>/pascal_2012_scribble``, which must exist."""
    path = Path(root) / SCRIBBLE_DIR
    if not path.is_dir():
        raise DataError(f"{path}: scribble folder not found (expected ScribbleSup PNGs beside JPEGImages/; "
                        f"or set scribbles.source: generate)")
    return path


def read_scribble(path: str | Path, image_shape: tuple[int, int], num_classes: int) -> np.ndarray:
    """(H, W) uint8 scribble labels from ``path``, checked against the image size and the class count."""
    path = Path(path)
    labels = load_mask(path)
    if labels.shape != tuple(image_shape):
        raise DataError(f"{path}: scribble size {labels.shape[1]}x{labels.shape[0]} differs from the image's "
                        f"{image_shape[1]}x{image_shape[0]}")
    bad = (labels >= num_classes) & (labels != IGNORE_INDEX)
    if bad.any():
        raise DataError(f"{path}: scribble value {int(labels[bad][0])} is neither a class index "
                        f"0..{num_classes - 1} nor 255")
    return labels


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(image_id.encode())])


def _breadth_first(points: np.ndarray, start: int, count: int) -> np.ndarray:
    """The first ``count`` of ``points`` (N, 2) in breadth-first order over 8-neighbour adjacency from
    ``start``; other skeleton pieces are not reached (one stroke per region)."""
    index = {(int(y), int(x)): i for i, (y, x) in enumerate(points)}
    order, seen, queue = [], {start}, deque([start])
    while queue and len(order) < count:
        current = queue.popleft()
        order.append(current)
        y, x = points[current]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                neighbour = index.get((int(y) + dy, int(x) + dx))
                if neighbour is not None and neighbour not in seen:
                    seen.add(neighbour)
                    queue.append(neighbour)
    return points[order]


def generate_scribble(mask: np.ndarray, width: int = 3, coverage: float = 0.03,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """Scribbles (H, W) uint8 for a ground-truth ``mask`` (class indices, 255 = void): one stroke per
    connected region of each class (see the module docstring); unlabelled pixels are 255."""
    if width < 1:
        raise ConfigError(f"scribbles.width: must be >= 1, got {width}")
    if not 0 < coverage <= 1:
        raise ConfigError(f"scribbles.coverage: must lie in (0, 1], got {coverage}")
    rng = rng or np.random.default_rng(0)
    out = np.full(mask.shape, IGNORE_INDEX, dtype=np.uint8)
    brush = disk(width // 2).astype(bool)
    pad = width // 2 + 1
    for cls in np.unique(mask[mask != IGNORE_INDEX]):
        components, count = ndimage.label(mask == cls, structure=_EIGHT)
        for label, box in enumerate(ndimage.find_objects(components), start=1):
            # the region's bounding box with room for the brush
            box = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in box)
            region = components[box] == label
            points = np.argwhere(skeletonize(region))
            if len(points) == 0:  # skeletonize keeps at least one pixel of a region; guard anyway
                points = np.argwhere(region)[:1]
            budget = max(1, math.ceil(coverage * int(region.sum()) / width))
            chosen = _breadth_first(points, int(rng.integers(len(points))), budget)
            stroke = np.zeros_like(region)
            stroke[chosen[:, 0], chosen[:, 1]] = True
            stroke = ndimage.binary_dilation(stroke, structure=brush) & region
            out[box][stroke] = cls
    return out
