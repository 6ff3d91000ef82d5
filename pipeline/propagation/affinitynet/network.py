"""AffinityNet (Ahn & Kwak, CVPR 2018, sec. 3.3): the feature grid whose L1 distances give the affinities
a_ij = exp(-||f_i - f_j||_1) (eq. 3) of the pairs of :mod:`pipeline.propagation.pairs`, trained with the
loss of eq. 4-7 (:func:`pipeline.propagation.pairs.affinity_loss`)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.cam.methods.base import backbone_head_groups
from pipeline.errors import ConfigError, DataError
from pipeline.models.backbones.base import Backbone
from pipeline.propagation.pairs import (
    _check_radius,
    affinity_loss,
    downsample_labels,
    pair_affinities,
    pair_labels,
    source_windows,
    training_pairs,
)


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
        (class index, 0 background, 255 ignore: :func:`pipeline.propagation.affinitynet.labels.confident_labels`)."""

        if labels.dim() != 3 or labels.shape[0] != images.shape[0] or labels.shape[-2:] != images.shape[-2:]:
            raise DataError(f"affinity labels must be (B, H, W) matching images {tuple(images.shape)}, "
                            f"got {tuple(labels.shape)}")
        features = self(images)
        h, w = features.shape[-2:]
        src, dst = training_pairs(h, w, self.radius, self.pair_set, features.device, "propagation.affinitynet.train")
        grid_labels = downsample_labels(labels.to(features.device), (h, w))
        fg_pos, bg_pos, neg = pair_labels(grid_labels, src, dst)
        terms = affinity_loss(self.affinities(features), fg_pos, bg_pos, neg)
        return {"loss": terms["loss"], **{k: v.detach() for k, v in terms.items() if k != "loss"}}

    def head_modules(self) -> list[nn.Module]:
        return [self.reductions, self.embed]

    def param_groups(self, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
        """Backbone at ``lr``, the new reduction and embedding layers at ``lr * head_lr_mult`` (PSA: 10x)."""
        return backbone_head_groups(self.backbone, self.head_modules(), lr, head_lr_mult)
