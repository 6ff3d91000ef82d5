"""Random-walk propagation of CAMs with AffinityNet affinities (Ahn & Kwak, CVPR 2018, sec. 3.4).

The affinity matrix A holds a_ij^beta for every pair of grid cells closer than the radius (both directions)
and 1 on the diagonal; the transition matrix is T = D^-1 A with D the row sums (eq. 9-10). The CAMs with
their background channel, v (N, C), are propagated as v <- T v for t = 2^logt steps (eq. 11). T is a
sparse CSR matrix with at most N (2M + 1) non-zeros (M = half-disc offsets), and the walk is t sparse
products with an (N, C) matrix, so memory stays linear in the number of cells; neither A nor T^t is ever
formed densely (PSA's code squares a dense N x N matrix logt times).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.affinity import pair_affinities, pair_indices
from pipeline.errors import ConfigError, DataError


def transition_matrix(affinities: torch.Tensor, h: int, w: int, radius: int, beta: float = 8.0) -> torch.Tensor:
    """Sparse CSR (N, N) transition matrix T = D^-1 A^beta, N = h * w, float32.

    ``affinities`` (P,) are the pair affinities in the order of ``pair_indices(h, w, radius)``
    (e.g. :func:`pipeline.affinity.pair_affinities`); self-affinities are 1.
    """
    if beta <= 0:
        raise ConfigError(f"random_walk.beta: must be > 0, got {beta}")
    device = affinities.device
    src, dst = pair_indices(h, w, radius, device=device)
    if affinities.shape != src.shape:
        raise DataError(f"transition_matrix: expected {src.numel()} affinities for a {h}x{w} grid with radius "
                        f"{radius}, got shape {tuple(affinities.shape)}")
    n = h * w
    with torch.autocast(device_type=device.type, enabled=False):
        weights = affinities.detach().float().clamp(0.0, 1.0).pow(beta)
        diag = torch.arange(n, device=device)
        rows = torch.cat([src, dst, diag])
        cols = torch.cat([dst, src, diag])
        values = torch.cat([weights, weights, torch.ones(n, device=device)])
        degree = torch.zeros(n, device=device).index_add_(0, rows, values)
        values = values / degree[rows]
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=False).coalesce()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return coo.to_sparse_csr()


def random_walk(cams_with_bg: torch.Tensor, transition: torch.Tensor, logt: int = 8) -> torch.Tensor:
    """Propagate (C, h, w) scores by t = 2^logt steps v <- T v; returns (C, h, w) float32."""
    if isinstance(logt, bool) or not isinstance(logt, int) or logt < 0:
        raise ConfigError(f"random_walk.logt: must be an integer >= 0, got {logt!r}")
    channels, h, w = cams_with_bg.shape
    if transition.shape != (h * w, h * w):
        raise DataError(f"random_walk: transition matrix {tuple(transition.shape)} does not fit a {h}x{w} grid")
    with torch.autocast(device_type=cams_with_bg.device.type, enabled=False):
        v = cams_with_bg.float().reshape(channels, h * w).t().contiguous()
        for _ in range(2 ** logt):
            v = torch.sparse.mm(transition, v)
        return v.t().reshape(channels, h, w)


def background_channel(cams: torch.Tensor, bg_alpha: float | None = None,
                       bg_threshold: float | None = None) -> torch.Tensor:
    """(1, H, W) background score from (K, H, W) CAMs: (1 - max_k cam_k)^bg_alpha (PSA 16, SEAM 6) or the
    constant ``bg_threshold``. Exactly one of the two must be given."""
    if (bg_alpha is None) == (bg_threshold is None):
        raise ConfigError("random_walk: give exactly one of bg_alpha and bg_threshold")
    if bg_threshold is not None:
        if not 0.0 <= bg_threshold <= 1.0:
            raise ConfigError(f"random_walk.bg_threshold: must lie in [0, 1], got {bg_threshold}")
        return torch.full((1,) + tuple(cams.shape[1:]), float(bg_threshold), device=cams.device)
    if bg_alpha <= 0:
        raise ConfigError(f"random_walk.bg_alpha: must be > 0, got {bg_alpha}")
    max_fg = cams.amax(dim=0, keepdim=True) if cams.shape[0] else cams.new_zeros((1,) + tuple(cams.shape[1:]))
    return (1.0 - max_fg.clamp(0.0, 1.0)).pow(bg_alpha)


def propagate_cam(cams: np.ndarray | torch.Tensor, keys: np.ndarray, features: torch.Tensor,
                  bg_alpha: float | None = 16.0, bg_threshold: float | None = None, beta: float = 8.0,
                  logt: int = 8, radius: int = 5, image_size: tuple[int, int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Random-walk pseudo mask from an image's CAMs and its AffinityNet features.

    ``cams`` (K, H, W) in [0, 1] for the labelled classes ``keys`` (1-based); ``features`` (D, h, w) from
    :class:`pipeline.affinity.AffinityNet` on that image (computation runs on their device). The background
    channel (:func:`background_channel`; pass ``bg_alpha=None`` to use ``bg_threshold``) joins the CAMs, the
    stack is area-averaged onto the grid, walked, bilinearly upsampled to ``image_size`` (default (H, W)),
    and the argmax over background + the labelled classes only gives the labels.
    Returns (label map (H, W) uint8 with 0 / keys, propagated scores (1 + K, H, W) float32).
    """
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if features.dim() != 3:
        raise DataError(f"propagate_cam: features must be (D, h, w), got shape {tuple(features.shape)}")
    device = features.device
    cams = torch.as_tensor(np.asarray(cams) if not torch.is_tensor(cams) else cams).to(device).float()
    if cams.dim() != 3 or cams.shape[0] != keys.size:
        raise DataError(f"propagate_cam: cams must be (K, H, W) with K={keys.size} keys, got {tuple(cams.shape)}")
    if keys.size and (keys.min() < 1 or keys.max() > 254):
        raise DataError(f"propagate_cam: keys must lie in [1, 254], got {keys.tolist()}")
    out_size = tuple(image_size) if image_size is not None else tuple(cams.shape[1:])
    h, w = features.shape[-2:]
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
        scores = torch.cat([background_channel(cams, bg_alpha, bg_threshold), cams.clamp(0.0, 1.0)], dim=0)
        grid_scores = F.adaptive_avg_pool2d(scores[None], (h, w))[0]
        transition = transition_matrix(pair_affinities(features, radius), h, w, radius, beta)
        walked = random_walk(grid_scores, transition, logt)
        upsampled = F.interpolate(walked[None], size=out_size, mode="bilinear", align_corners=False)[0]
    lookup = np.concatenate([[0], keys]).astype(np.uint8)
    label_map = lookup[upsampled.argmax(dim=0).cpu().numpy()]
    return label_map, upsampled.cpu().numpy().astype(np.float32)
