"""Random-walk propagation of CAMs with AffinityNet affinities (Ahn & Kwak, CVPR 2018, sec. 3.4).

The walk itself is the shared sparse core (:mod:`pipeline.propagation.sparse_walk`): T = D^-1 A^beta over
the pairs of the pair set the AffinityNet was trained on (PSA's by default), 2^logt steps (eq. 9-11). The
full-resolution CAMs are zero-padded at the bottom and right to a multiple of the grid stride, average-pooled
over stride x stride cells, walked, bilinearly upsampled to the padded size and cropped back, as PSA's
``infer_aff.py``. The AffinityNet input is padded the same way (:func:`pad_to_stride`).

The background, two reference behaviours (``bg_mode``):

* ``psa`` (PSA / SEAM ``infer_aff.py``): the background score (1 - max_k cam_k)^bg_alpha is computed on the
  full-resolution CAM *before* the walk, joins the classes and is walked with them; argmax after upsampling.
* ``irn`` (IRN ``step/make_sem_seg_labels.py``): only the foreground maps are walked; after upsampling and
  cropping they are divided by their maximum and a constant background ``bg_threshold`` (IRN 0.25) is
  prepended before the argmax. IRN divides by the single maximum over all classes and pixels
  (``rw_up / torch.max(rw_up)``), not by each class's own maximum; that is what is done here.

Departures from the references:

* PSA and IRN raise a dense N x N transition matrix to the power 2^logt by repeated squaring; here the walk
  is 2^logt sparse products (same result, linear memory).
* IRN walks its stride-4 CAMs straight from the network (max-normalised on that grid) and multiplies them by
  (1 - boundary) first; here the walk starts from the stored full-resolution CAMs area-pooled to the grid
  (PSA's way), and the boundary factor belongs to IRN's own boundary-affinity module, not to this walk.
* The label map is restricted to background + the image's labelled classes (PSA walks all 21 channels, the
  unlabelled ones being zero, which gives the same argmax except on exact ties).
* The background strength is calibrated to the CAMs at hand (``propagation.affinitynet.walk.bg_alpha``
  / ``bg_threshold``: ``auto``, the stage's default). PSA's alpha 16 and IRN's 0.25 were tuned on their ResNet-38 / ResNet-50
  VOC CAMs: before the walk, (1 - m)^16 falls below the foreground at m ~ 0.13, while our Lite0 MSRC CAMs
  are best thresholded far higher (benchmarks/README.md, the propagation ladder). ``auto`` takes eval_cam's best threshold t for the CAM method and, for
  ``psa``, the power at which the background crosses the foreground exactly there
  (:func:`alpha_for_threshold`); for ``irn``, t itself. On MSRC both fixed values put the walk far below
  the CAM it refines and ``auto`` above it (benchmarks/README.md, the propagation ladder).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import ArgumentError, DataError
from pipeline.propagation.pairs import pair_affinities
from pipeline.propagation.sparse_walk import (
    grid_to_image,
    infer_grid_stride,
    pool_to_grid,
    random_walk,
    transition_matrix,
)


BG_MODES = ("psa", "irn")


def alpha_for_threshold(threshold: float) -> float:
    """The power alpha at which PSA's background (1 - m)^alpha equals the foreground score m at
    m = ``threshold``: alpha = ln(t) / ln(1 - t). A CAM thresholded at t and a psa background of this power
    label the un-walked map identically."""
    if not 0.0 < threshold < 1.0:
        raise ArgumentError("bg_alpha", f"auto needs a CAM threshold strictly between 0 and 1, got {threshold}")
    return float(np.log(threshold) / np.log1p(-threshold))


def background_channel(cams: torch.Tensor, bg_alpha: float = 16.0) -> torch.Tensor:
    """(1, H, W) background score (1 - max_k cam_k)^bg_alpha from (K, H, W) CAMs in [0, 1] (PSA 16, SEAM 6)."""
    if bg_alpha is None or bg_alpha <= 0:
        raise ArgumentError("bg_alpha", f"must be > 0, got {bg_alpha}")
    max_fg = cams.amax(dim=0, keepdim=True) if cams.shape[0] else cams.new_zeros((1,) + tuple(cams.shape[1:]))
    return (1.0 - max_fg.clamp(0.0, 1.0)).pow(bg_alpha)


def irn_background(walked_fg: torch.Tensor, bg_threshold: float = 0.25) -> torch.Tensor:
    """IRN's read-out of walked foreground maps (K, H, W): divide by their maximum (one maximum over all
    classes and pixels, as IRN) and prepend the constant background ``bg_threshold``; returns (1 + K, H, W).

    Maps that are zero everywhere stay zero, so every pixel is background."""
    if not 0.0 <= bg_threshold <= 1.0:
        raise ArgumentError("bg_threshold", f"must lie in [0, 1], got {bg_threshold}")
    peak = walked_fg.max() if walked_fg.numel() else walked_fg.new_ones(())
    scaled = walked_fg / peak.clamp_min(1e-5)
    background = torch.full((1,) + tuple(walked_fg.shape[1:]), float(bg_threshold), device=walked_fg.device)
    return torch.cat([background, scaled], dim=0)


def propagate_cam(cams: np.ndarray | torch.Tensor, keys: np.ndarray, features: torch.Tensor,
                  bg_alpha: float = 16.0, bg_threshold: float = 0.25, beta: float = 8.0, logt: int = 8,
                  radius: int = 5, image_size: tuple[int, int] | None = None, bg_mode: str = "psa",
                  grid_stride: int | None = None, pair_set: str = "psa") -> tuple[np.ndarray, np.ndarray]:
    """Random-walk pseudo mask from an image's CAMs and its AffinityNet features.

    ``cams`` (K, H, W) in [0, 1] for the labelled classes ``keys`` (1-based); ``features`` (D, h, w) from
    :class:`pipeline.propagation.affinitynet.network.AffinityNet` on the image padded to a multiple of the grid stride (computation
    runs on their device); h = ceil(H / stride), w = ceil(W / stride); pairs of ``pair_set``
    (:mod:`pipeline.propagation.pairs`, PSA's by default: the set the AffinityNet was trained on). ``bg_mode`` ``psa`` walks
    (1 - max cam)^bg_alpha with the classes; ``irn`` walks the classes alone and reads them out with
    :func:`irn_background` (``bg_threshold``). The result is resized to ``image_size`` when that differs
    from (H, W); the argmax runs over background + the labelled classes only.
    Returns (label map uint8 with 0 / keys, scores (1 + K, ...) float32, channel 0 = background).
    """
    if bg_mode not in BG_MODES:
        raise ArgumentError("bg_mode", f"must be one of {', '.join(BG_MODES)}, got {bg_mode!r}")
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if features.dim() != 3:
        raise DataError(f"propagate_cam: features must be (D, h, w), got shape {tuple(features.shape)}")
    device = features.device
    cams = torch.as_tensor(np.asarray(cams) if not torch.is_tensor(cams) else cams).to(device).float()
    if cams.dim() != 3 or cams.shape[0] != keys.size:
        raise DataError(f"propagate_cam: cams must be (K, H, W) with K={keys.size} keys, got {tuple(cams.shape)}")
    if keys.size and (keys.min() < 1 or keys.max() > 254):
        raise DataError(f"propagate_cam: keys must lie in [1, 254], got {keys.tolist()}")
    height, width = cams.shape[1:]
    h, w = features.shape[-2:]
    stride = infer_grid_stride(height, width, h, w, grid_stride)
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
        cams = cams.clamp(0.0, 1.0)
        scores = torch.cat([background_channel(cams, bg_alpha), cams]) if bg_mode == "psa" else cams
        if scores.shape[0]:
            transition = transition_matrix(pair_affinities(features, radius, pair_set), h, w, radius, beta,
                                           pair_set)
            walked = random_walk(pool_to_grid(scores, stride), transition, logt)
            walked = grid_to_image(walked, stride, (height, width))
        else:  # irn mode without a labelled class: nothing to walk, all background
            walked = scores
        if bg_mode == "irn":
            walked = irn_background(walked, bg_threshold)
        if image_size is not None and tuple(image_size) != (height, width):
            walked = F.interpolate(walked[None], size=tuple(image_size), mode="bilinear", align_corners=False)[0]
    lookup = np.concatenate([[0], keys]).astype(np.uint8)
    label_map = lookup[walked.argmax(dim=0).cpu().numpy()]
    return label_map, walked.cpu().numpy().astype(np.float32)
