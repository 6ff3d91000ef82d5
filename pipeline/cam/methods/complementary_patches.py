"""CPN's complementary patch pairs (Zhang et al., ICCV 2021; Ferenas/CPN tool/imutils.py
``hide_patch_ss``): which pixels the half images I1 and I2 keep, and how much each half weighs.
The options and their defaults are described in :mod:`pipeline.cam.methods.cpn`.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.errors import ArgumentError, DataError
from pipeline.models.backbones.base import Backbone

PATCH_MODES = ("grid", "slic")
HIDE_DRAWS = ("authors", "half")


def patch_regions(
    height: int,
    width: int,
    mode: str = "slic",
    grid_size: int = 4,
    n_segments: int = 300,
    image: np.ndarray | None = None,
    compactness: float = 10.0,
) -> np.ndarray:
    """Integer region labels (height, width): ``grid``, a ``grid_size`` x ``grid_size`` grid of near-equal
    cells; ``slic``, SLIC superpixels of ``image`` (H, W, 3) as it is given (the authors pass the
    normalised image tensor), about ``n_segments`` of them, capped at the pixel count."""
    if mode == "grid":
        if not 2 <= grid_size <= min(height, width):
            raise ArgumentError("grid_size",
                                f"must be in 2..{min(height, width)} for a {height}x{width} image, got {grid_size}")
        rows = np.arange(height) * grid_size // height
        cols = np.arange(width) * grid_size // width
        return rows[:, None] * grid_size + cols[None, :]
    if mode == "slic":
        from skimage.segmentation import slic

        if n_segments < 2:
            raise ArgumentError("n_segments", f"must be at least 2, got {n_segments}")
        if image is None or image.ndim != 3 or image.shape[:2] != (height, width):
            raise DataError(f"complementary_masks: slic needs the ({height}, {width}, 3) image")
        return slic(image, n_segments=min(n_segments, height * width), compactness=compactness,
                    start_label=1, channel_axis=-1)
    raise ArgumentError("patch_mode", f"unknown {mode!r}; choose one of {', '.join(PATCH_MODES)}")


def hidden_regions(ids: np.ndarray, rng: np.random.Generator, draw: str = "authors") -> np.ndarray:
    """The region ids I1 hides, out of the n sorted ``ids``. ``authors`` (tool/imutils.py hide_patch_ss):
    ``floor((n + 1) / 2)`` draws with replacement from ``0..n``, draw v > 0 hiding the v-th region (their
    labels start at 1, so 0 hides nothing): about 39% of the regions on average, possibly none.
    ``half``: exactly ``floor(n / 2)`` distinct regions."""
    n = len(ids)
    if draw == "authors":
        picks = rng.integers(0, n + 1, size=(n + 1) // 2)
        return ids[picks[picks > 0] - 1]
    if draw == "half":
        return rng.permutation(ids)[: n // 2]
    raise ArgumentError("hide_draw", f"unknown {draw!r}; choose one of {', '.join(HIDE_DRAWS)}")


def complementary_masks(
    height: int,
    width: int,
    rng: np.random.Generator,
    mode: str = "slic",
    grid_size: int = 4,
    n_segments: int = 300,
    image: np.ndarray | None = None,
    compactness: float = 10.0,
    draw: str = "authors",
) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean (height, width) masks of the pixels KEPT in I1 and I2: exact complements, each
    region (:func:`patch_regions`) wholly in one of them; I1 hides :func:`hidden_regions`."""
    regions = patch_regions(height, width, mode, grid_size, n_segments, image, compactness)
    keep1 = ~np.isin(regions, hidden_regions(np.unique(regions), rng, draw))
    return keep1, ~keep1


def scaled_segments(n_segments: int, height: int, width: int, reference_size: int) -> int:
    """``n_segments`` superpixels for a ``reference_size``^2 crop -> the same superpixel area on a
    height x width crop (at least 2); ``reference_size`` 0 keeps ``n_segments``."""
    if reference_size <= 0:
        return n_segments
    return max(2, round(n_segments * height * width / reference_size**2))


def kept_fraction(keep: torch.Tensor) -> torch.Tensor:
    """Per-image fraction (B, 1, 1, 1) of the pixels a keep-mask (B, 1, H, W) keeps: the weight of that
    half's CAM in CPN's complementary target (the authors' ``contri_rate``)."""
    return keep.mean(dim=(1, 2, 3), keepdim=True)


def neutral_colour(backbone: Backbone) -> torch.Tensor:
    """The [0, 1] RGB colour (1, 3, 1, 1) that the backbone's (per-channel affine) normalisation maps to 0."""
    probe = torch.stack([torch.zeros(3), torch.ones(3)]).view(2, 3, 1, 1)
    with torch.no_grad():
        at0, at1 = backbone.normalize(probe.to(next(backbone.buffers(), probe).device))
    return (-at0 / (at1 - at0)).view(1, 3, 1, 1).cpu()
