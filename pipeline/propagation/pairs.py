"""Cell pairs, pair labels and the affinity loss every propagation method shares (Ahn & Kwak, "Learning
Pixel-level Semantic Affinity with Image-level Supervision", CVPR 2018; IRN reuses them).

Affinities of a feature grid f: a_ij = exp(-||f_i - f_j||_1) (eq. 3; the norm is taken as the *mean* of
absolute channel differences, as in the authors' implementation). Only pairs closer than ``radius`` on the
grid are used, in training (eq. 4-7) and in the random walk (:mod:`pipeline.propagation.sparse_walk`).

Pair indexing: each unordered pair is enumerated once through a half-disc of offsets (dy > 0, or dy == 0
and dx > 0) with dy^2 + dx^2 < radius^2 (strict, as PSA: radius 5 -> 34 offsets), offset-major, the sources
of each offset row-major. The pair set (``pair_set``, ``propagation.<method>.train.pair_set``: the training pairs and the
walk's, through the checkpoint):

* ``psa`` (default; PSA ``tool/pyutils.py`` get_indices_of_pairs, the pairs of its training and of its walk
  ``infer_aff.py``; IRN's ``misc/indexing.py`` PathIndex keeps the same sources for its training pairs):
  sources are only the cells with y <= h - radius and radius - 1 <= x <= w - radius, so no pair starts in
  the first or last radius - 1 columns or in the last radius - 1 rows. Border cells keep only the links
  that start inside (some, near the top corners, none at all), and a grid narrower than 2 radius - 1 or
  lower than radius has no pair.
* ``full`` (departure): every in-bounds pair, so the border band links in every direction. The demo's
  params.yaml sets it for AffinityNet: on its 24 x 24 grids no PSA pair starts in 44% of the cells (78% at
  stride 8, 12 x 12), which lowers the walk's ceiling (benchmarks/README.md, issue 19 part 7).

The loss's denominators add 1e-5 to the pair counts, as PSA's ``train_aff.py``.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from pipeline.errors import ArgumentError, ConfigError, DataError

IGNORE = 255  # label of a pixel in no pair's supervision
_LOG_EPS = 1e-5  # added to a and 1 - a inside the logs of the loss and to its pair counts (PSA's constant)


def _check_radius(radius: int) -> int:
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 2:
        raise ArgumentError("radius", f"must be an integer >= 2 (radius 1 contains no neighbour), got {radius!r}")
    return radius


@functools.lru_cache(maxsize=16)
def _offsets(radius: int) -> torch.Tensor:
    r = torch.arange(-radius + 1, radius)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    dy, dx = dy.flatten(), dx.flatten()
    keep = (dy * dy + dx * dx < radius * radius) & ((dy > 0) | ((dy == 0) & (dx > 0)))
    return torch.stack([dy[keep], dx[keep]], dim=1)


def radius_offsets(radius: int) -> torch.Tensor:
    """(M, 2) int64 offsets (dy, dx) of the half-disc: dy > 0 or (dy == 0, dx > 0), dy^2 + dx^2 < radius^2.

    Together with their negations they cover every neighbour within the radius exactly once.
    """
    return _offsets(_check_radius(radius)).clone()


PAIR_SETS = ("psa", "full")  # see the module docstring


def source_windows(h: int, w: int, radius: int, pair_set: str = "psa") -> list[tuple[int, int, int, int, int, int]]:
    """(dy, dx, y0, y1, x0, x1) for each offset of :func:`radius_offsets` (in order) whose pairs exist: its
    sources are the cells y0 <= y < y1, x0 <= x < x1 (row-major), each paired with (y + dy, x + dx)."""
    _check_radius(radius)
    if pair_set not in PAIR_SETS:
        raise ArgumentError("pair_set", f"must be one of {', '.join(PAIR_SETS)}, got {pair_set!r}")
    windows = []
    for dy, dx in _offsets(radius).tolist():
        if pair_set == "psa":
            y1, x0, x1 = h - radius + 1, radius - 1, w - radius + 1
        else:  # every source whose destination lies on the grid
            y1, x0, x1 = h - dy, max(0, -dx), min(w, w - dx)
        if y1 > 0 and x1 > x0:
            windows.append((dy, dx, 0, y1, x0, x1))
    return windows


@functools.lru_cache(maxsize=32)
def _pairs(h: int, w: int, radius: int, pair_set: str) -> tuple[torch.Tensor, torch.Tensor]:
    src, dst = [], []
    for dy, dx, y0, y1, x0, x1 in source_windows(h, w, radius, pair_set):
        cells = (torch.arange(y0, y1).view(-1, 1) * w + torch.arange(x0, x1).view(1, -1)).flatten()
        src.append(cells)
        dst.append(cells + dy * w + dx)
    if not src:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    return torch.cat(src), torch.cat(dst)


def pair_indices(h: int, w: int, radius: int, device: torch.device | str | None = None, pair_set: str = "psa"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (src, dst), each (P,) int64, of the unordered pairs of cells of an h x w grid closer
    than ``radius`` in ``pair_set`` (module docstring), one direction per pair (see :func:`radius_offsets`);
    row-major flat index y * w + x; offset-major order, as PSA's (directions, sources) layout flattened.

    Pairs never wrap across rows. The result is cached per (h, w, radius, pair_set): treat it as read-only.
    """
    _check_radius(radius)
    if h < 1 or w < 1:
        raise DataError(f"pair_indices: grid must be at least 1 x 1, got {h} x {w}")
    source_windows(1, 1, radius, pair_set)  # validates pair_set
    if device is None or torch.device(device).type == "cpu":
        return _pairs(int(h), int(w), radius, pair_set)
    return _pairs_on(int(h), int(w), radius, pair_set, str(device))


@functools.lru_cache(maxsize=32)
def _pairs_on(h: int, w: int, radius: int, pair_set: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_pairs` copied to ``device`` once per (grid, pair set, device), not once per training step."""
    src, dst = _pairs(h, w, radius, pair_set)
    return src.to(device), dst.to(device)


def training_pairs(h: int, w: int, radius: int, pair_set: str, device: torch.device | str | None,
                   section: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pair_indices` for a training grid, or a :class:`ConfigError` naming ``section``'s crop size
    and radius when the grid holds no pair (a loss on no pair would train nothing)."""
    src, dst = pair_indices(h, w, radius, device=device, pair_set=pair_set)
    if src.numel() == 0:
        raise ConfigError(f"{section}: a {h}x{w} training grid holds no {pair_set} pair within radius {radius} "
                          f"(psa needs at least {radius} x {2 * radius - 1} cells): raise {section}.crop_size "
                          f"or lower {section}.radius")
    return src, dst


def pair_affinities(features: torch.Tensor, radius: int, pair_set: str = "psa") -> torch.Tensor:
    """a_ij = exp(-mean_c |f_ic - f_jc|) for features (..., D, h, w) -> (..., P), computed in float32, in
    the pair order of ``pair_indices(h, w, radius, pair_set=pair_set)``.

    Each offset compares two shifted views of the grid, so no (D, P) gather of features is materialised.
    """
    h, w = features.shape[-2:]
    features = features.float()
    distances = []
    for dy, dx, y0, y1, x0, x1 in source_windows(h, w, radius, pair_set):
        here = features[..., y0:y1, x0:x1]
        there = features[..., y0 + dy : y1 + dy, x0 + dx : x1 + dx]
        diff = here - there
        diff = diff.abs_() if not diff.requires_grad else diff.abs()  # in place when no graph is recorded
        distances.append(diff.mean(dim=-3).flatten(-2))
    if not distances:
        return features.new_zeros(features.shape[:-3] + (0,))
    return torch.exp(-torch.cat(distances, dim=-1))


def affinity_loss(aff: torch.Tensor, fg_pos: torch.Tensor, bg_pos: torch.Tensor, neg: torch.Tensor
                  ) -> dict[str, torch.Tensor]:
    """PSA's affinity loss (eq. 5-8): L = L_fg+ / 4 + L_bg+ / 4 + L_neg / 2.

    ``aff`` (..., P) affinities in [0, 1]; ``fg_pos``/``bg_pos``/``neg`` boolean masks of the same shape
    (see :func:`pair_labels`). L_fg+ and L_bg+ average -log(a) over their pairs,
    L_neg averages -log(1 - a). An empty set contributes 0; 1e-5 is added inside both logs and to each
    pair count (as PSA).
    Returns {"loss", "fg_pos", "bg_pos", "neg"} (the three terms unweighted).
    """
    if not (aff.shape == fg_pos.shape == bg_pos.shape == neg.shape):
        raise DataError(f"affinity_loss: shapes differ: aff {tuple(aff.shape)}, masks {tuple(fg_pos.shape)}, "
                        f"{tuple(bg_pos.shape)}, {tuple(neg.shape)}")
    aff = aff.float()
    # an additive epsilon (not a clamp) keeps the gradient alive for pairs whose affinity has collapsed
    pos_cost = -torch.log(aff + _LOG_EPS)
    neg_cost = -torch.log(1.0 - aff + _LOG_EPS)

    def masked_mean(cost: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(cost.dtype)
        return (cost * mask).sum() / (mask.sum() + _LOG_EPS)  # PSA: sum(label * cost) / (sum(label) + 1e-5)

    fg = masked_mean(pos_cost, fg_pos)
    bg = masked_mean(pos_cost, bg_pos)
    ng = masked_mean(neg_cost, neg)
    return {"loss": fg / 4 + bg / 4 + ng / 2, "fg_pos": fg, "bg_pos": bg, "neg": ng}


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
