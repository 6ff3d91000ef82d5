"""Fully connected CRF (Kraehenbuehl & Koltun, NeurIPS 2011) and CAM -> pseudo-mask conversion.

The CRF energy is E(x) = sum_i psi_u(x_i) + sum_{i<j} psi_p(x_i, x_j) with unary psi_u = -log P(x_i) and a
Potts pairwise term mixing two Gaussian kernels (eq. 3 of the paper): an appearance (bilateral) kernel
w1 exp(-|p_i-p_j|^2 / 2 theta_a^2 - |I_i-I_j|^2 / 2 theta_b^2) and a smoothness kernel
w2 exp(-|p_i-p_j|^2 / 2 theta_g^2). Mean-field inference uses permutohedral-lattice filtering (pydensecrf),
so no N x N matrix is ever formed. Defaults are PSA's (Ahn & Kwak, CVPR 2018): 10 iterations,
theta_g = 3 / w2 = 3, theta_a = 80 / theta_b = 13 / w1 = 10.

Every per-image function here is pure and module-level, so it can be sent to a multiprocessing pool.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pydensecrf.densecrf as dcrf

from pipeline.errors import ArgumentError, DataError

_PROB_FLOOR = 1e-5  # probabilities are clipped here before -log, so a zero score is a large finite cost


def _check_image(image: np.ndarray, height: int, width: int, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != (height, width):
        raise DataError(f"{name}: image must be ({height}, {width}, 3) to match the scores, got {image.shape}")
    return np.ascontiguousarray(image, dtype=np.uint8)


def _crf_model(image: np.ndarray, unary: np.ndarray, gauss_sxy: float, gauss_compat: float,
               bilateral_sxy: float, bilateral_srgb: float, bilateral_compat: float) -> dcrf.DenseCRF2D:
    num_labels, height, width = unary.shape
    model = dcrf.DenseCRF2D(width, height, num_labels)
    model.setUnaryEnergy(np.ascontiguousarray(unary.reshape(num_labels, -1), dtype=np.float32))
    model.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    model.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=image, compat=bilateral_compat)
    return model


def dense_crf(image: np.ndarray, probs: np.ndarray, iterations: int = 10, gauss_sxy: float = 3,
              gauss_compat: float = 3, bilateral_sxy: float = 80, bilateral_srgb: float = 13,
              bilateral_compat: float = 10) -> np.ndarray:
    """Mean-field posterior (C, H, W) float32 of a dense CRF with unary -log(probs).

    ``image`` is (H, W, 3) uint8 RGB; ``probs`` (C, H, W) non-negative scores. Scores need not sum to one:
    a per-pixel constant in the unary does not change the posterior, so CAM-derived scores can be passed
    as they are (as PSA does).
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise DataError(f"dense_crf: probs must be (C, H, W), got shape {probs.shape}")
    if iterations < 1:
        raise ArgumentError("iterations", f"must be >= 1, got {iterations}")
    num_labels, height, width = probs.shape
    image = _check_image(image, height, width, "dense_crf")
    unary = -np.log(np.clip(probs, _PROB_FLOOR, None))
    model = _crf_model(image, unary, gauss_sxy, gauss_compat, bilateral_sxy, bilateral_srgb, bilateral_compat)
    posterior = np.asarray(model.inference(iterations), dtype=np.float32)
    return posterior.reshape(num_labels, height, width)


def dense_crf_labels(image: np.ndarray, labels: np.ndarray, num_labels: int, gt_prob: float = 0.7,
                     iterations: int = 10, gauss_sxy: float = 3, gauss_compat: float = 3,
                     bilateral_sxy: float = 50, bilateral_srgb: float = 5,
                     bilateral_compat: float = 10) -> np.ndarray:
    """IRN's label CRF: refine a hard (H, W) label map in [0, num_labels) and return the refined map.

    Unary: the given label has probability ``gt_prob``, the others share 1 - gt_prob equally (IRN settings:
    gt_prob 0.7, bilateral sxy 50, srgb 5).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(f"dense_crf_labels: labels must be (H, W), got shape {labels.shape}")
    if not 0.0 < gt_prob < 1.0:
        raise ArgumentError("gt_prob", f"must lie in (0, 1), got {gt_prob}")
    if num_labels < 2 or labels.min() < 0 or labels.max() >= num_labels:
        raise DataError(f"dense_crf_labels: labels must lie in [0, {num_labels}) with num_labels >= 2")
    probs = np.full((num_labels,) + labels.shape, (1.0 - gt_prob) / (num_labels - 1), dtype=np.float32)
    np.put_along_axis(probs, labels[None].astype(np.int64), gt_prob, axis=0)
    posterior = dense_crf(image, probs, iterations, gauss_sxy, gauss_compat, bilateral_sxy,
                          bilateral_srgb, bilateral_compat)
    return posterior.argmax(axis=0)


def background_score(cams: np.ndarray, bg_mode: str = "threshold", bg_threshold: float = 0.2,
                     bg_alpha: float = 16.0) -> np.ndarray:
    """Background score (H, W) from (K, H, W) foreground CAMs in [0, 1].

    ``threshold``: a constant ``bg_threshold`` (PSA 0.2, IRN 0.15, SEAM 0.26), so a pixel is background
    wherever no CAM exceeds it. ``power``: (1 - max_k cam_k)^alpha (PSA eq. for the background activation;
    alpha 4 / 32 give PSA's low / high background confidence, 16 its random-walk input).
    """
    if bg_mode == "threshold":
        if not 0.0 <= bg_threshold <= 1.0:
            raise ArgumentError("bg_threshold", f"must lie in [0, 1], got {bg_threshold}")
        return np.full(cams.shape[1:], bg_threshold, dtype=np.float32)
    if bg_mode == "power":
        if bg_alpha <= 0:
            raise ArgumentError("bg_alpha", f"must be > 0, got {bg_alpha}")
        max_fg = cams.max(axis=0) if cams.shape[0] else np.zeros(cams.shape[1:], np.float32)
        return np.power(1.0 - np.clip(max_fg, 0.0, 1.0), bg_alpha).astype(np.float32)
    raise ArgumentError("bg_mode", f"must be 'threshold' or 'power', got {bg_mode!r}")


def scores_to_pseudo_mask(image: np.ndarray, scores: np.ndarray, keys: Sequence[int], use_crf: bool = True,
                          confidence: float = 0.0, **crf_kwargs) -> np.ndarray:
    """Label map (H, W) uint8 from scores (1 + K, H, W) over background + the image's K labelled classes.

    Channel 0 is background (label 0), channel k + 1 is class ``keys[k]``; only these take part, so no
    absent class can appear. The posterior is the dense-CRF output (``use_crf``) or the scores normalised
    per pixel; pixels whose posterior maximum is below ``confidence`` become 255 (ignore). Works for
    CAM + background scores and for random-walk output alike.
    """
    scores = np.asarray(scores, dtype=np.float32)
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if scores.ndim != 3 or scores.shape[0] != keys.size + 1:
        raise DataError(f"scores must be (1 + K, H, W) for K={keys.size} keys, got shape {scores.shape}")
    if keys.size and (keys.min() < 1 or keys.max() > 254):
        raise DataError(f"keys: class indices must lie in [1, 254], got {keys.tolist()}")
    if not 0.0 <= confidence <= 1.0:
        raise ArgumentError("confidence", f"must lie in [0, 1], got {confidence}")
    height, width = scores.shape[1:]
    if keys.size == 0:
        return np.zeros((height, width), dtype=np.uint8)
    if use_crf:
        posterior = dense_crf(image, scores, **crf_kwargs)
    else:
        scores = np.clip(scores, 0.0, None)
        posterior = scores / np.maximum(scores.sum(axis=0, keepdims=True), 1e-12)
    lookup = np.concatenate([[0], keys]).astype(np.uint8)
    mask = lookup[posterior.argmax(axis=0)]
    if confidence > 0.0:
        mask[posterior.max(axis=0) < confidence] = 255
    return mask


def cam_to_pseudo_mask(image: np.ndarray, cams: np.ndarray, keys: Sequence[int], bg_mode: str = "threshold",
                       bg_threshold: float = 0.2, bg_alpha: float = 16.0, use_crf: bool = True,
                       confidence: float = 0.0, **crf_kwargs) -> np.ndarray:
    """Pseudo mask (H, W) uint8 from (K, H, W) CAMs in [0, 1] of the image's labelled classes ``keys``.

    The background score comes from :func:`background_score`; the rest is :func:`scores_to_pseudo_mask`.
    An image with no labelled class is all background.
    """
    cams = np.asarray(cams, dtype=np.float32)
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if cams.ndim != 3 or cams.shape[0] != keys.size:
        raise DataError(f"cams must be (K, H, W) with K={keys.size} keys, got shape {cams.shape}")
    bg = background_score(cams, bg_mode, bg_threshold, bg_alpha)
    scores = np.concatenate([bg[None], cams], axis=0)
    return scores_to_pseudo_mask(image, scores, keys, use_crf=use_crf, confidence=confidence, **crf_kwargs)
