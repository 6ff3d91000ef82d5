"""AffinityNet (Ahn & Kwak, "Learning Pixel-level Semantic Affinity with Image-level Supervision", CVPR 2018).

AffinityNet maps an image to a feature grid f (stride ``grid_stride``) whose L1 distances encode semantic
affinity between nearby cells: a_ij = exp(-||f_i - f_j||_1) (eq. 3; the norm is taken as the *mean* of
absolute channel differences, as in the authors' implementation). Only pairs closer than ``radius`` on the
grid are used, in training (eq. 4-7) and in the random walk (:mod:`pipeline.random_walk`).

Pair indexing: each unordered pair is enumerated once through a half-disc of offsets (dy > 0, or dy == 0
and dx > 0) with dy^2 + dx^2 < radius^2 (strict, as PSA: radius 5 -> 34 offsets), offset-major, the sources
of each offset row-major. The pair set (``pair_set``, ``train_aff.pair_set``: the training pairs and the
walk's, through the checkpoint):

* ``psa`` (default; PSA ``tool/pyutils.py`` get_indices_of_pairs, the pairs of its training and of its walk
  ``infer_aff.py``; IRN's ``misc/indexing.py`` PathIndex keeps the same sources for its training pairs):
  sources are only the cells with y <= h - radius and radius - 1 <= x <= w - radius, so no pair starts in
  the first or last radius - 1 columns or in the last radius - 1 rows. Border cells keep only the links
  that start inside (some, near the top corners, none at all), and a grid narrower than 2 radius - 1 or
  lower than radius has no pair.
* ``full`` (departure, not measured): every in-bounds pair, so the border band links in every direction.

The loss's denominators add 1e-5 to the pair counts, as PSA's ``train_aff.py``.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ArgumentError, ConfigError, DataError
from pipeline.methods.base import backbone_head_groups
from pipeline.models.backbones.base import Backbone

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
    (see :func:`pipeline.affinity_labels.pair_labels`). L_fg+ and L_bg+ average -log(a) over their pairs,
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


def _reduction(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, bias=False),
        nn.GroupNorm(math.gcd(32, out_ch), out_ch),
        nn.ReLU(inplace=True),
    )


class AffinityNet(nn.Module):
    """AffinityNet head on a shared :class:`Backbone` (PSA sec. 3.2).

    The backbone stages ``stages`` (default: the last three) each go through a 1x1 conv + GroupNorm + ReLU
    reduction (PSA: 64 / 128 / 256 channels), are bilinearly resized to the grid at ``grid_stride``
    (default 8, PSA; IRN uses 4) of size ceil(H / grid_stride) x ceil(W / grid_stride), concatenated, and
    mapped by a final 1x1 conv to the ``embed_dim``-channel affinity embedding (PSA: 448). Training and the
    walk use the pairs of ``pair_set`` (module docstring; PSA's by default).
    The backbone is fine-tuned at the base learning rate, the new layers at 10x (:meth:`param_groups`).
    """

    def __init__(self, backbone: Backbone, stages: Sequence[int] = (-3, -2, -1),
                 reduce_channels: Sequence[int] = (64, 128, 256), embed_dim: int = 448,
                 grid_stride: int = 8, radius: int = 5, pair_set: str = "psa"):
        super().__init__()
        num_stages = len(backbone.stage_channels)
        if len(stages) == 0 or len(stages) != len(reduce_channels):
            raise ConfigError(f"affinity.stages and affinity.reduce_channels must be non-empty and of equal "
                              f"length, got {list(stages)} and {list(reduce_channels)}")
        if any(not -num_stages <= s < num_stages for s in stages):
            raise ConfigError(f"affinity.stages: indices must address the backbone's {num_stages} stages, "
                              f"got {list(stages)}")
        if grid_stride < 1 or embed_dim < 1 or any(c < 1 for c in reduce_channels):
            raise ConfigError("affinity.grid_stride, affinity.embed_dim and affinity.reduce_channels must be >= 1")
        self.backbone = backbone
        self.stages = tuple(s % num_stages for s in stages)
        self.grid_stride = grid_stride
        self.radius = _check_radius(radius)
        source_windows(1, 1, radius, pair_set)  # validates pair_set
        self.pair_set = pair_set
        self.reductions = nn.ModuleList(
            _reduction(backbone.stage_channels[s], c) for s, c in zip(self.stages, reduce_channels)
        )
        self.embed = nn.Conv2d(sum(reduce_channels), embed_dim, 1, bias=False)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.grid_stride), -(-width // self.grid_stride)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> affinity features (B, embed_dim, h, w) at ``grid_stride``."""
        size = self.grid_size(images.shape[-2], images.shape[-1])
        stage_features = self.backbone(images)
        reduced = []
        for stage, reduction in zip(self.stages, self.reductions):
            x = reduction(stage_features[stage])
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            reduced.append(x)
        return self.embed(torch.cat(reduced, dim=1))

    def affinities(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) features -> (B, P) affinities exp(-mean_c |f_i - f_j|) in float32, for the pairs
        ``pair_indices(h, w, self.radius, pair_set=self.pair_set)`` in that order."""
        return pair_affinities(features, self.radius, self.pair_set)

    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms for images (B, 3, H, W) and confident label maps (B, H, W) at image resolution
        (class index, 0 background, 255 ignore: :func:`pipeline.affinity_labels.confident_labels`)."""
        from pipeline.affinity_labels import downsample_labels, pair_labels

        if labels.dim() != 3 or labels.shape[0] != images.shape[0] or labels.shape[-2:] != images.shape[-2:]:
            raise DataError(f"affinity labels must be (B, H, W) matching images {tuple(images.shape)}, "
                            f"got {tuple(labels.shape)}")
        features = self(images)
        h, w = features.shape[-2:]
        src, dst = training_pairs(h, w, self.radius, self.pair_set, features.device, "train_aff")
        grid_labels = downsample_labels(labels.to(features.device), (h, w))
        fg_pos, bg_pos, neg = pair_labels(grid_labels, src, dst)
        terms = affinity_loss(self.affinities(features), fg_pos, bg_pos, neg)
        return {"loss": terms["loss"], **{k: v.detach() for k, v in terms.items() if k != "loss"}}

    def head_modules(self) -> list[nn.Module]:
        return [self.reductions, self.embed]

    def param_groups(self, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
        """Backbone at ``lr``, the new reduction and embedding layers at ``lr * head_lr_mult`` (PSA: 10x)."""
        return backbone_head_groups(self.backbone, self.head_modules(), lr, head_lr_mult)
