"""IRN's class-boundary branch and its inter-pixel affinities (Ahn, Cho & Kwak, "Weakly Supervised Learning
of Instance Segmentation with Inter-pixel Relations", CVPR 2019; code: jiwoon-ahn/irn).

A boundary map B in [0, 1] at stride 4 is predicted from every backbone stage; the affinity of two pixels
i, j within a radius is a_ij = 1 - max_{k in path(i, j)} B(k), the path being the grid cells whose
distance to the straight line through i and j is below one cell, inside the box spanned by i and j
(IRN's ``PathIndex``). Training applies the AffinityNet-style loss to these affinities: -log a
on same-class pairs (foreground and background averaged separately), -log(1 - a) on different-class pairs,
so the boundary must rise somewhere between different classes and stay low between same-class pixels.

Departures from jiwoon-ahn/irn (``net/resnet50_irn.py``, ``misc/indexing.py``, ``step/train_irn.py``):

- Any :class:`Backbone`: every stage it exposes feeds the branch (IRN: the five ResNet-50 stages, strides
  4/4/8/16/16, 64..2048 channels), each resized to the stride-4 grid of ceil(H/4) x ceil(W/4) cells by
  bilinear interpolation (IRN upsamples by a fixed factor and crops top-left; a stage finer than stride 4,
  as the ``tiny`` backbone's first, is resized down the same way).
- Pairs are those of :func:`pipeline.propagation.pairs.pair_indices` (the same half-disc of offsets as IRN's
  ``search_dirs``). By default training starts, as IRN's ``PathIndex``, no pair within radius - 1 cells of
  the left, right or bottom border (``propagation.irn.train.pair_set: psa``, PSA's pair set); the departure is the
  option ``full`` (not measured), every in-bounds pair. IRN's walk pads the boundary map so that every in-image pair
  exists: :func:`pipeline.propagation.irn.walk.boundary_transition` uses ``full``.
- The path maximum is taken over shifted views of the boundary map, one per path cell of each offset, in
  the pair order of ``pair_indices`` (offset-major); IRN orders the offsets by path length and gathers a flat
  index per length. Same pairs, same values.
- IRN's displacement-field branch (instance masks) is out of scope; its affinity loss is the half of the
  total loss that concerns the boundary, which here is the whole loss.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError, DataError
from pipeline.models.backbones.base import Backbone
from pipeline.propagation.pairs import (
    affinity_loss,
    downsample_labels,
    pair_labels,
    radius_offsets,
    source_windows,
    training_pairs,
)

GRID_STRIDE = 4  # IRN predicts the boundary, and walks, at stride 4


@functools.lru_cache(maxsize=16)
def _paths(radius: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    paths = []
    for dy, dx in radius_offsets(radius).tolist():
        length_sq = dy * dy + dx * dx
        cells = tuple(
            (y, x)
            for y in range(min(0, dy), max(0, dy) + 1)
            for x in range(min(0, dx), max(0, dx) + 1)
            if (dy * x - dx * y) ** 2 < length_sq  # squared distance to the line i -> j below one cell
        )
        paths.append(cells)
    return tuple(paths)


def path_cells(radius: int) -> list[list[tuple[int, int]]]:
    """For each offset of :func:`pipeline.propagation.pairs.radius_offsets` (same order), the cells (y, x) relative
    to the source on the path to the destination: both ends and every cell of the box they span whose
    distance to the line between them is below 1 (IRN's ``PathIndex.get_search_paths_dst``)."""
    radius_offsets(radius)  # validates the radius
    return [list(cells) for cells in _paths(radius)]


def boundary_affinities(boundary: torch.Tensor, radius: int, pair_set: str = "psa") -> torch.Tensor:
    """a_ij = 1 - max of ``boundary`` (..., h, w) over the path from i to j, for every pair of
    ``pair_indices(h, w, radius, pair_set=pair_set)`` in that order -> (..., P) float32 (``psa``: the pairs
    of IRN's ``PathIndex``, ``full``: every in-bounds pair).

    Each path cell of each offset is one shifted view of the map, so memory is linear in the pairs.
    """
    h, w = boundary.shape[-2:]
    boundary = boundary.float()
    paths = dict(zip(map(tuple, radius_offsets(radius).tolist()), _paths(radius)))
    maxima = []
    for dy, dx, y0, y1, x0, x1 in source_windows(h, w, radius, pair_set):
        views = [boundary[..., y0 + py : y1 + py, x0 + px : x1 + px] for py, px in paths[(dy, dx)]]
        maxima.append(torch.stack(views, dim=0).amax(dim=0).flatten(-2))
    if not maxima:
        return boundary.new_zeros(boundary.shape[:-2] + (0,))
    return 1.0 - torch.cat(maxima, dim=-1)


def _edge_reduction(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.GroupNorm(math.gcd(4, out_ch), out_ch))


class BoundaryNet(nn.Module):
    """IRN's class-boundary branch on a frozen :class:`Backbone` (IRN ``fc_edge1..6``).

    Every backbone stage goes through a 1x1 conv to ``branch_channels`` (IRN 32) + GroupNorm(4), is resized
    to the stride-4 grid, and passes a ReLU; the concatenation is mapped by a 1x1 conv with bias to one
    logit per cell, the boundary being its sigmoid. As in IRN the backbone is not trained: its features
    are computed without gradient and it stays in eval mode (frozen BatchNorm statistics).
    """

    def __init__(self, backbone: Backbone, branch_channels: int = 32, radius: int = 10, pair_set: str = "psa"):
        super().__init__()
        if branch_channels < 1:
            raise ConfigError(f"propagation.irn.train.branch_channels: must be >= 1, got {branch_channels}")
        self.backbone = backbone.requires_grad_(False)
        source_windows(1, 1, radius, pair_set)  # validates the radius and the pair set
        self.radius = radius
        self.pair_set = pair_set
        self.reductions = nn.ModuleList(_edge_reduction(c, branch_channels) for c in backbone.stage_channels)
        self.classifier = nn.Conv2d(branch_channels * len(backbone.stage_channels), 1, 1, bias=True)

    def train(self, mode: bool = True) -> "BoundaryNet":
        super().train(mode)
        self.backbone.eval()
        return self

    @staticmethod
    def grid_size(height: int, width: int) -> tuple[int, int]:
        return -(-height // GRID_STRIDE), -(-width // GRID_STRIDE)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> boundary logits (B, 1, ceil(H/4), ceil(W/4))."""
        size = self.grid_size(images.shape[-2], images.shape[-1])
        with torch.no_grad():
            stage_features = self.backbone(images)
        branches = []
        for features, reduction in zip(stage_features, self.reductions):
            x = reduction(features)
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            branches.append(F.relu(x))
        return self.classifier(torch.cat(branches, dim=1))

    @torch.no_grad()
    def boundary(self, image: torch.Tensor, flip: bool = True) -> torch.Tensor:
        """(3, H, W) image -> (h, w) boundary map in [0, 1]; with ``flip``, the sigmoid of the mean logit of
        the image and its mirror image (IRN's ``EdgeDisplacement``)."""
        batch = torch.stack([image, image.flip(-1)]) if flip else image[None]
        logits = self(batch)[:, 0]
        logit = (logits[0] + logits[1].flip(-1)) / 2 if flip else logits[0]
        return torch.sigmoid(logit)

    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms for images (B, 3, H, W) and relation label maps (B, H, W) at image resolution (class
        index, 0 background, 255 ignore: :func:`pipeline.propagation.irn.labels.relation_labels`). The loss is
        fg_pos / 4 + bg_pos / 4 + neg / 2, IRN's (bg_pos / 2 + fg_pos / 2 + neg) / 2."""

        if labels.dim() != 3 or labels.shape[0] != images.shape[0] or labels.shape[-2:] != images.shape[-2:]:
            raise DataError(f"relation labels must be (B, H, W) matching images {tuple(images.shape)}, "
                            f"got {tuple(labels.shape)}")
        boundary = torch.sigmoid(self(images).float())[:, 0]
        h, w = boundary.shape[-2:]
        src, dst = training_pairs(h, w, self.radius, self.pair_set, boundary.device, "propagation.irn.train")
        fg_pos, bg_pos, neg = pair_labels(downsample_labels(labels.to(boundary.device), (h, w)), src, dst)
        terms = affinity_loss(boundary_affinities(boundary, self.radius, self.pair_set), fg_pos, bg_pos, neg)
        return {"loss": terms["loss"], **{k: v.detach() for k, v in terms.items() if k != "loss"}}

    def param_groups(self, lr: float, head_lr_mult: float = 1.0) -> list[dict]:
        """Only the boundary branch trains, at ``lr * head_lr_mult`` (IRN: the branch at lr, 0.1)."""
        params = [p for m in (self.reductions, self.classifier) for p in m.parameters()]
        return [{"params": params, "lr": lr * head_lr_mult, "name": "boundary"}]
