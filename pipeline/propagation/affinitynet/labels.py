"""Affinity labels for AffinityNet (Ahn & Kwak, CVPR 2018, sec. 3.3).

Confident regions come from the CAMs refined by a dense CRF twice: with the background score
(1 - max_k cam_k)^alpha at a low alpha (4, a strong background: what is still foreground is confident
foreground) and at a high alpha (32, a weak background: what is still background is confident background).
As PSA builds them (``infer_cls.py`` ``_crf_with_alpha``; ``voc12/data.py`` ``VOC12AffDataset``): both CRF
posteriors are averaged over each grid cell (stride 8) and arg-maxed per cell; a cell is the low-alpha
class where that is foreground, ignored where the low-alpha map says background, and background wherever
the high-alpha map says background (this last rule wins); cells with no score at all (padding) are ignored.
The CRF has its own kernels (PSA's ``crf_inference``: bilateral sxy 80, srgb 13, compat 10; Gaussian
sxy 3, compat 3; 10 iterations), separate from the pseudo-mask CRF.
Pixel pairs within the radius on the feature grid are labelled from these maps: positive when both ends
are confident and share a class (foreground-foreground or background-background), negative when both are
confident and differ; pairs touching an ignored pixel take no part.

Departure from PSA: PSA averages the CRF scores over the cells of each *augmented training crop*; here the
cells are those of the whole image (padded at the bottom / right to a multiple of the stride, as PSA pads
at inference) and the cell labels are written back as stride x stride blocks at full resolution, because
the training pipeline augments label maps, not score maps. At scale 1 the training grid reads these blocks
back exactly; under random rescaling each training cell takes the block under its centre.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.errors import ArgumentError, ConfigError, DataError
from pipeline.propagation.label_inputs import IGNORE, checked_label_inputs

_NO_SCORE = 1e-5  # PSA: cells whose every score is below this (padding) are ignored

CrfFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _default_crf() -> CrfFn:
    from functools import partial

    from pipeline.pseudo_masks.crf import dense_crf

    return partial(dense_crf, iterations=10, gauss_sxy=3, gauss_compat=3, bilateral_sxy=80, bilateral_srgb=13,
                   bilateral_compat=10)


def cell_average(scores: np.ndarray, stride: int) -> np.ndarray:
    """(C, H, W) -> (C, ceil(H / s), ceil(W / s)): zero-pad at the bottom and right to multiples of the
    stride, then average each s x s cell (PSA's ``AvgPool2d(8)`` on the score maps)."""
    scores = np.asarray(scores, dtype=np.float32)
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ArgumentError("grid_stride", f"must be an integer >= 1, got {stride!r}")
    channels, height, width = scores.shape
    padded = np.pad(scores, ((0, 0), (0, -height % stride), (0, -width % stride)))
    h, w = padded.shape[1] // stride, padded.shape[2] // stride
    return padded.reshape(channels, h, stride, w, stride).mean(axis=(2, 4))


def combine_confident(low: np.ndarray, high: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """PSA's label rule on (1 + K, h, w) low- and high-alpha scores (channel 0 background, channel k + 1
    class ``keys[k]``): the low-alpha class where it is foreground, ignore where it is background, then
    background wherever the high-alpha argmax is background; cells without any score are ignored."""
    lookup = np.concatenate([[0], np.asarray(keys, dtype=np.int64).reshape(-1)]).astype(np.uint8)
    low_arg, high_arg = low.argmax(axis=0), high.argmax(axis=0)
    labels = np.where(low_arg == 0, IGNORE, lookup[low_arg]).astype(np.uint8)
    labels[high_arg == 0] = 0
    no_score = np.maximum(low.max(axis=0), high.max(axis=0)) < _NO_SCORE
    labels[no_score] = IGNORE
    return labels


def confident_labels(image: np.ndarray, cams: np.ndarray, keys: np.ndarray, fg_alpha: float = 4.0,
                     bg_alpha: float = 32.0, crf: CrfFn | None = None, grid_stride: int = 8) -> np.ndarray:
    """Confident label map (H, W) uint8 at full image resolution: 0 background, ``keys[k]`` for the k-th
    labelled class, 255 ignore; constant on each ``grid_stride`` x ``grid_stride`` cell of the grid
    anchored at the top-left (grid_stride 1: per pixel). Training resamples it to the feature grid
    (:func:`downsample_labels`).

    ``image`` (H, W, 3) uint8; ``cams`` (K, H, W) in [0, 1] of the image's K labelled classes ``keys``
    (1-based class indices); ``crf(image, scores) -> posterior`` (default :func:`pipeline.pseudo_masks.crf.dense_crf`
    with PSA's label-CRF kernels). The CRF runs on [(1 - max cam)^alpha, cams] for alpha = ``fg_alpha`` and
    ``bg_alpha``; both posteriors are cell-averaged (:func:`cell_average`) and combined by
    :func:`combine_confident`.
    """
    image, cams, keys = checked_label_inputs("confident_labels", image, cams, keys)
    if not 0 < fg_alpha < bg_alpha:
        raise ConfigError(f"propagation.affinitynet.labels.fg_alpha/bg_alpha: need 0 < fg_alpha < bg_alpha, got {fg_alpha}, {bg_alpha}")
    height, width = cams.shape[1:]
    if keys.size == 0:
        cell_average(np.zeros((1, 1, 1), np.float32), grid_stride)  # validates grid_stride
        return np.zeros((height, width), dtype=np.uint8)
    if crf is None:
        crf = _default_crf()

    cams = np.clip(cams, 0.0, 1.0)
    headroom = 1.0 - cams.max(axis=0, keepdims=True)
    cells = []
    for alpha in (fg_alpha, bg_alpha):
        scores = np.concatenate([np.power(headroom, alpha), cams], axis=0).astype(np.float32)
        posterior = np.asarray(crf(image, scores))
        if posterior.shape != scores.shape:
            raise DataError(f"confident_labels: crf returned shape {posterior.shape}, expected {scores.shape}")
        cells.append(cell_average(posterior, grid_stride))
    grid_labels = combine_confident(cells[0], cells[1], keys)
    blocks = np.repeat(np.repeat(grid_labels, grid_stride, axis=0), grid_stride, axis=1)
    return np.ascontiguousarray(blocks[:height, :width])
