"""IRN's random walk: CAMs propagated with affinities from the class-boundary map (Ahn, Cho & Kwak,
CVPR 2019; jiwoon-ahn/irn ``misc/indexing.py: propagate_to_edge``, ``step/make_sem_seg_labels.py``).

On the stride-4 grid of ceil(H / 4) x ceil(W / 4) cells: affinities a_ij = 1 - max boundary on the path
i -> j for every pair within ``radius`` (IRN 5, :func:`pipeline.propagation.irn.network.boundary_affinities`); transition
T = D^-1 A^beta (beta 10) with self-affinity 1; the start is the boundary-gated CAM v = cam * (1 - B)
(foreground classes only, each normalised by its maximum); t = 2^exp_times steps (exp_times 8: 256). The
walked maps are bilinearly upsampled x4 and cropped to the image (IRN's ``make_sem_seg_labels.py``), divided
by their overall maximum, and a constant background channel (``bg_threshold``, IRN's ``sem_seg_bg_thres``
0.25) joins them before the argmax.

T is the sparse CSR matrix of :func:`pipeline.propagation.sparse_walk.transition_matrix` (memory linear in cells);
IRN builds it densely and squares it ``exp_times`` times. IRN normalises the columns of A^beta and
multiplies the CAM row vector from the left, which for a symmetric A is the same walk as v <- D^-1 A v.

Departures from the reference:
- Our CAMs are stored at image resolution; the stride-4 start is their average over each 4 x 4 cell (the
  last row and column of cells, when the image is not a multiple of 4, over their pixels inside the image),
  renormalised per class by its maximum (IRN interpolates each scale's network CAM to stride 4 and
  normalises by the maximum the same way).
- A walk that is zero everywhere stays zero (IRN divides by its maximum: NaN).
- The constant background is a parameter of this function; the ``walk`` stage defaults it to eval_cam's
  best threshold for the method (``propagation.irn.walk.bg_threshold: auto``) instead of IRN's 0.25, which was tuned on
  IRN's CAMs; on MSRC (2^8 steps) ``auto`` scores higher (benchmarks/README.md, the propagation ladder).
- The ``walk`` stage walks 2^3 steps by default (``propagation.irn.walk.exp_times: 3``; IRN 2^8): shorter walks keep
  more of the CAM's shape on MSRC and on the demo dataset, whose grids are small (benchmarks/README.md).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import ArgumentError, DataError
from pipeline.propagation.irn.network import GRID_STRIDE, boundary_affinities
from pipeline.propagation.sparse_walk import grid_to_image, random_walk, transition_matrix

_EPS = 1e-5


def boundary_transition(boundary: torch.Tensor, radius: int = 5, beta: float = 10.0) -> torch.Tensor:
    """Sparse CSR (N, N) transition D^-1 A^beta of an (h, w) boundary map, N = h * w, a_ij from the path
    maximum (:func:`pipeline.propagation.irn.network.boundary_affinities`) over every in-image pair (IRN's
    ``propagate_to_edge`` pads the map with radius cells of boundary 1 left, right and below, so that all
    of them exist)."""
    if boundary.dim() != 2:
        raise DataError(f"boundary_transition: boundary must be (h, w), got shape {tuple(boundary.shape)}")
    h, w = boundary.shape
    return transition_matrix(boundary_affinities(boundary, radius, "full"), h, w, radius, beta, pair_set="full")


def propagate_boundary(cams: np.ndarray | torch.Tensor, keys: np.ndarray, boundary: torch.Tensor,
                       beta: float = 10.0, exp_times: int = 8, radius: int = 5, bg_threshold: float = 0.25,
                       image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """IRN semantic-segmentation labels from an image's CAMs and its boundary map.

    ``cams`` (K, H, W) in [0, 1] for the labelled classes ``keys`` (1-based); ``boundary`` (h, w) in
    [0, 1] on the stride-4 grid, (ceil(H / 4), ceil(W / 4)) (:meth:`pipeline.propagation.irn.network.BoundaryNet.boundary`;
    computation runs on its device).
    Returns (label map (H', W') uint8 with 0 / keys, scores (1 + K, H', W') float32 with the constant
    background as channel 0), (H', W') = ``image_size`` (default (H, W)).
    """
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if boundary.dim() != 2:
        raise DataError(f"propagate_boundary: boundary must be (h, w), got shape {tuple(boundary.shape)}")
    if not 0.0 <= bg_threshold <= 1.0:
        raise ArgumentError("bg_threshold", f"must lie in [0, 1], got {bg_threshold}")
    if isinstance(exp_times, bool) or not isinstance(exp_times, int) or exp_times < 0:
        raise ArgumentError("exp_times", f"must be an integer >= 0, got {exp_times!r}")
    device = boundary.device
    cams = torch.as_tensor(np.asarray(cams) if not torch.is_tensor(cams) else cams).to(device).float()
    if cams.dim() != 3 or cams.shape[0] != keys.size:
        raise DataError(f"propagate_boundary: cams must be (K, H, W) with K={keys.size} keys, "
                        f"got {tuple(cams.shape)}")
    if keys.size and (keys.min() < 1 or keys.max() > 254):
        raise DataError(f"propagate_boundary: keys must lie in [1, 254], got {keys.tolist()}")
    out_size = tuple(image_size) if image_size is not None else tuple(cams.shape[1:])
    background = torch.full((1,) + out_size, float(bg_threshold), device=device)
    if keys.size == 0:
        return np.zeros(out_size, dtype=np.uint8), background.cpu().numpy()
    height, width = cams.shape[1:]
    if tuple(boundary.shape) != (-(-height // GRID_STRIDE), -(-width // GRID_STRIDE)):
        raise DataError(f"propagate_boundary: a {tuple(boundary.shape)} boundary map is not the stride-{GRID_STRIDE} "
                        f"grid of {height}x{width} CAMs (ceil(size / {GRID_STRIDE}) cells)")
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
        boundary = boundary.float().clamp(0.0, 1.0)
        start = F.avg_pool2d(cams.clamp(0.0, 1.0)[None], GRID_STRIDE, GRID_STRIDE, ceil_mode=True)[0]
        start = start / (start.amax(dim=(1, 2), keepdim=True) + _EPS)
        start = start * (1.0 - boundary)
        walked = random_walk(start, boundary_transition(boundary, radius, beta), exp_times)
        upsampled = grid_to_image(walked, GRID_STRIDE, (height, width))  # x4, cropped top-left (IRN)
        if out_size != (height, width):
            upsampled = F.interpolate(upsampled[None], size=out_size, mode="bilinear", align_corners=False)[0]
        peak = upsampled.max()
        upsampled = upsampled / peak if peak > 0 else upsampled
        scores = torch.cat([background, upsampled], dim=0)
    lookup = np.concatenate([[0], keys]).astype(np.uint8)
    label_map = lookup[scores.argmax(dim=0).cpu().numpy()]
    return label_map, scores.cpu().numpy().astype(np.float32)
