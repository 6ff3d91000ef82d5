"""The sparse random walk every propagation method shares (Ahn & Kwak, CVPR 2018, sec. 3.4, eq. 9-11;
IRN, Ahn, Cho & Kwak, CVPR 2019, sec. 3.4).

The affinity matrix A holds a_ij^beta for every pair of a pair set (both directions,
:mod:`pipeline.propagation.pairs`; a cell in no pair only keeps its own score, as in PSA's walk) and 1 on the
diagonal; the transition matrix is T = D^-1 A with D the row sums (eq. 9-10), so every row of T sums to 1.
Scores v (N, C) are propagated as v <- T v for t = 2^logt steps (eq. 11). T is a sparse CSR matrix with at
most N (2M + 1) non-zeros (M = half-disc offsets), and the walk is t sparse products with an (N, C) matrix,
so memory stays linear in the number of cells; neither A nor T^t is ever formed densely (PSA and IRN
square a dense N x N matrix logt times: same result).

Grid geometry, as PSA's ``infer_aff.py``: scores are zero-padded at the bottom and right to a multiple of
the grid stride and average-pooled over stride x stride cells (:func:`pool_to_grid`); walked grids are
bilinearly upsampled to the padded size and cropped back (:func:`grid_to_image`).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from pipeline.errors import ArgumentError, DataError
from pipeline.propagation.pairs import pair_indices


def transition_matrix(affinities: torch.Tensor, h: int, w: int, radius: int, beta: float = 8.0,
                      pair_set: str = "psa") -> torch.Tensor:
    """Sparse CSR (N, N) transition matrix T = D^-1 A^beta, N = h * w, float32.

    ``affinities`` (P,) are the pair affinities in the order of ``pair_indices(h, w, radius,
    pair_set=pair_set)`` (e.g. :func:`pipeline.propagation.pairs.pair_affinities`); self-affinities are 1. With PSA's
    pair set a cell in no pair keeps its scores (its row is the unit vector), as in PSA's walk.
    """
    if beta <= 0:
        raise ArgumentError("beta", f"must be > 0, got {beta}")
    device = affinities.device
    src, dst = pair_indices(h, w, radius, device=device, pair_set=pair_set)
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
        raise ArgumentError("logt", f"must be an integer >= 0, got {logt!r}")
    channels, h, w = cams_with_bg.shape
    if transition.shape != (h * w, h * w):
        raise DataError(f"random_walk: transition matrix {tuple(transition.shape)} does not fit a {h}x{w} grid")
    with torch.autocast(device_type=cams_with_bg.device.type, enabled=False):
        v = cams_with_bg.float().reshape(channels, h * w).t().contiguous()
        for _ in range(2 ** logt):
            v = torch.sparse.mm(transition, v)
        return v.t().reshape(channels, h, w)


def infer_grid_stride(height: int, width: int, h: int, w: int, grid_stride: int | None = None) -> int:
    """The stride s with ceil(H / s) == h and ceil(W / s) == w (the AffinityNet grid of a padded image);
    ``grid_stride`` is checked when given, else s = ceil(H / h)."""
    stride = -(-height // h) if grid_stride is None else int(grid_stride)
    if stride < 1 or -(-height // stride) != h or -(-width // stride) != w:
        raise DataError(f"random walk: a {h}x{w} feature grid does not fit a {height}x{width} image at grid "
                        f"stride {stride} (expected ceil(size / stride) cells)")
    return stride


def pad_to_stride(images: torch.Tensor, stride: int, value: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Pad (..., C, H, W) at the bottom and right to multiples of ``stride`` with ``value`` (a scalar or a
    (C,) per-channel fill), as PSA pads its network input and CAMs before the walk."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % stride, -width % stride
    if not pad_h and not pad_w:
        return images
    value = torch.as_tensor(value, dtype=images.dtype, device=images.device)
    padded = value.reshape(-1, 1, 1).expand(*images.shape[:-2], height + pad_h, width + pad_w).clone()
    padded[..., :height, :width] = images
    return padded


def input_fill(normalize, device: torch.device | str | None = None) -> torch.Tensor:
    """(3,) CPU colour in [0, 1] that an affine per-channel input ``normalize`` (run on ``device``) maps
    to 0: PSA pads the *normalised* image with zeros, i.e. the raw image with this colour."""
    with torch.no_grad():
        at0 = normalize(torch.zeros(1, 3, 1, 1, device=device)).flatten().cpu()
        at1 = normalize(torch.ones(1, 3, 1, 1, device=device)).flatten().cpu()
    return -at0 / (at1 - at0)


def pool_to_grid(scores: torch.Tensor, stride: int) -> torch.Tensor:
    """(C, H, W) -> (C, ceil(H / s), ceil(W / s)): zero-pad to multiples of the stride, then average over
    each s x s cell (PSA ``infer_aff.py``)."""
    padded = pad_to_stride(scores, stride, 0.0)
    return F.avg_pool2d(padded[None], stride, stride)[0]


def grid_to_image(grid_scores: torch.Tensor, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) -> (C, H, W): bilinear upsampling to the padded size (h s, w s), cropped to ``size``."""
    h, w = grid_scores.shape[-2:]
    up = F.interpolate(grid_scores[None], size=(h * stride, w * stride), mode="bilinear", align_corners=False)[0]
    return up[:, : size[0], : size[1]]
