"""Affinity labels for AffinityNet (Ahn & Kwak, CVPR 2018, sec. 3.3).

Confident regions come from the CAMs refined by a dense CRF twice: with the background score
(1 - max_k cam_k)^alpha at a low alpha (4, a strong background: what is still foreground is confident
foreground) and at a high alpha (32, a weak background: what is still background is confident background).
Pixel pairs within the radius on the feature grid are labelled from these maps: positive when both ends
are confident and share a class (foreground-foreground or background-background), negative when both are
confident and differ; pairs touching an ignored pixel take no part.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from pipeline.errors import ConfigError, DataError

IGNORE = 255

CrfFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _default_crf() -> CrfFn:
    from pipeline.crf import dense_crf

    return dense_crf


def confident_labels(image: np.ndarray, cams: np.ndarray, keys: np.ndarray, fg_alpha: float = 4.0,
                     bg_alpha: float = 32.0, crf: CrfFn | None = None) -> np.ndarray:
    """Confident label map (H, W) uint8 at full image resolution: 0 background, ``keys[k]`` for the k-th
    labelled class, 255 ignore. Training resamples it to the feature grid (:func:`downsample_labels`).

    ``image`` (H, W, 3) uint8; ``cams`` (K, H, W) in [0, 1] of the image's K labelled classes ``keys``
    (1-based class indices); ``crf(image, scores) -> posterior`` (default :func:`pipeline.crf.dense_crf`
    with PSA's settings; pass e.g. ``functools.partial`` to change them). The CRF runs on
    [(1 - max cam)^alpha, cams] for alpha = ``fg_alpha`` and ``bg_alpha``; a pixel is confident foreground
    of class c where both posteriors' argmax is c, confident background where both say background, and
    ignored where they disagree. (PSA's code keeps the low-alpha class where both say foreground and lets
    the high-alpha background win over a low-alpha foreground; both cases are rare and are ignored here.)
    """
    image = np.asarray(image)
    cams = np.asarray(cams, dtype=np.float32)
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if cams.ndim != 3 or cams.shape[0] != keys.size:
        raise DataError(f"confident_labels: cams must be (K, H, W) with K={keys.size} keys, got {cams.shape}")
    if image.dtype != np.uint8 or image.shape != cams.shape[1:] + (3,):
        raise DataError(f"confident_labels: image must be uint8 {cams.shape[1:] + (3,)} to match the cams, "
                        f"got {image.dtype} {image.shape}")
    if keys.size and (keys.min() < 1 or keys.max() >= IGNORE):
        raise DataError(f"confident_labels: keys must lie in [1, {IGNORE - 1}], got {keys.tolist()}")
    if not 0 < fg_alpha < bg_alpha:
        raise ConfigError(f"affinity.fg_alpha/bg_alpha: need 0 < fg_alpha < bg_alpha, got {fg_alpha}, {bg_alpha}")
    if keys.size == 0:
        return np.zeros(cams.shape[1:], dtype=np.uint8)
    if crf is None:
        crf = _default_crf()

    cams = np.clip(cams, 0.0, 1.0)
    headroom = 1.0 - cams.max(axis=0, keepdims=True)
    lookup = np.concatenate([[0], keys]).astype(np.uint8)
    argmaxes = []
    for alpha in (fg_alpha, bg_alpha):
        scores = np.concatenate([np.power(headroom, alpha), cams], axis=0).astype(np.float32)
        posterior = np.asarray(crf(image, scores))
        if posterior.shape != scores.shape:
            raise DataError(f"confident_labels: crf returned shape {posterior.shape}, expected {scores.shape}")
        argmaxes.append(posterior.argmax(axis=0))
    low, high = argmaxes
    return np.where(low == high, lookup[low], IGNORE).astype(np.uint8)


def downsample_labels(labels: torch.Tensor | np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resampling of label maps (..., H, W) to (..., h, w) at the cell centres.

    Grid cell (i, j) takes the pixel at ((i + 0.5) H / h, (j + 0.5) W / w), the same cell geometry that
    bilinear up/down-sampling with ``align_corners=False`` uses. Returns an int64 tensor.
    """
    labels = torch.as_tensor(labels)
    height, width = labels.shape[-2:]
    h, w = size
    if h < 1 or w < 1:
        raise DataError(f"downsample_labels: target size must be positive, got {size}")
    device = labels.device
    rows = ((torch.arange(h, device=device) + 0.5) * (height / h)).long().clamp_max(height - 1)
    cols = ((torch.arange(w, device=device) + 0.5) * (width / w)).long().clamp_max(width - 1)
    return labels.long()[..., rows[:, None], cols[None, :]]


def pair_labels(label_map: torch.Tensor, src: torch.Tensor, dst: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boolean masks (fg_pos, bg_pos, neg), each (..., P), for pairs (src, dst) of a grid label map
    (..., h, w) holding 0 background, a positive class index, or 255 ignore.

    fg_pos: both confident and the same foreground class; bg_pos: both background; neg: both confident and
    different classes.
    """
    flat = torch.as_tensor(label_map).long().flatten(-2)
    a, b = flat[..., src], flat[..., dst]
    confident = (a != IGNORE) & (b != IGNORE)
    same = a == b
    fg_pos = confident & same & (a != 0)
    bg_pos = confident & same & (a == 0)
    neg = confident & ~same
    return fg_pos, bg_pos, neg
