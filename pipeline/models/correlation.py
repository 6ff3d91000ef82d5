"""Correlation modules that refine a CAM with learned feature similarity, and the CAM utilities they share.

- :class:`PixelCorrelationModule` (PCM): SEAM (Wang et al., CVPR 2020, Sec. 3.3, eq. 6). Pixel-to-pixel
  affinity ``ReLU(cos(theta_i, theta_j))`` normalised over ``j``; ``refined_i = sum_j a_ij * cam_j``.
  The affinity is (h*w) x (h*w) on the feature grid: inherent to PCM. At a 448 crop and stride 8 that is
  3136^2 (~39 MB a float32 map per image); at stride 16 784^2 (~2.5 MB). :func:`pcm_propagate` works in
  blocks of query pixels, so without autograd (CAM read-out) it never holds the whole matrix; in training
  autograd keeps every block, i.e. the full matrix per image.
- :class:`PixelRegionCorrelationModule` (PRCM): CPN (Zhang et al., ICCV 2021, Sec. 3.3). One region
  feature per class, pooled under that class's CAM; pixel-to-region similarity ``ReLU(cos(theta_i, r_k))``
  normalised over regions is the refined CAM. Pixel x region is (h*w) x K: no pixel-pixel matrix.

Both embed the detached deeper backbone stages (each through a 1x1 conv + ReLU, resized to the last
stage's grid) and the downsampled normalised image, then a bias-free 1x1 conv (SEAM's f8_3/f8_4/f9).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError

EPS = 1e-5


def max_normalise(cams: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """ReLU, then divide every (image, channel) map by its spatial maximum: values in [0, 1)."""
    cams = F.relu(cams)
    return cams / (cams.amax(dim=(2, 3), keepdim=True) + eps)


def add_background(fg: torch.Tensor) -> torch.Tensor:
    """Prepend a background channel ``1 - max_c fg_c`` to max-normalised foreground CAMs (B, C, h, w)."""
    background = (1.0 - fg.amax(dim=1, keepdim=True)).clamp_min(0.0)
    return torch.cat([background, fg], dim=1)


def keep_max_only(cams: torch.Tensor) -> torch.Tensor:
    """Zero every channel that is not the per-pixel maximum (ties keep all). Applied to foreground CAMs
    before :func:`add_background` it is SEAM's ``max_onehot``, which leaves the background alone."""
    return cams * (cams >= cams.amax(dim=1, keepdim=True)).to(cams.dtype)


def ohem_l1(prediction: torch.Tensor, target: torch.Tensor, top_ratio: float = 0.2) -> torch.Tensor:
    """L1 with online hard example mining: per image, the mean of the largest ``top_ratio`` fraction of the
    element-wise absolute differences over (channels x pixels) (SEAM's ECR, CPN's cross regularisation)."""
    if not 0.0 < top_ratio <= 1.0:
        raise ConfigError(f"ohem_ratio: must be in (0, 1], got {top_ratio}")
    errors = (prediction - target).abs().flatten(1)
    k = max(1, int(errors.shape[1] * top_ratio))
    return errors.topk(k, dim=1).values.mean()


def low_activation_loss(refined_fg: torch.Tensor, fraction: float = 0.25) -> torch.Tensor:
    """Mean of the lowest ``fraction`` of each image's per-pixel maximum foreground activation
    (B, C, h, w), after ReLU: pushes the weakest quarter of a refined map to zero. The authors' SEAM and
    CPN code add this to the classification loss (``adaptive_min_pooling_loss``; by their comment it
    moves the best background threshold rather than the best mIoU)."""
    strongest = refined_fg.amax(dim=1).flatten(1)
    k = max(1, int(strongest.shape[1] * fraction))
    return F.relu(strongest.topk(k, dim=1, largest=False).values).mean()


class CorrelationEmbedding(nn.Module):
    """Per-pixel embedding theta from the last ``len(stage_dims)`` backbone stages (+ the image).

    Backbone features are detached (as in SEAM's implementation): the correlation loss trains the
    embedding only, the backbone is trained by the classification and equivariance/complementarity losses.
    """

    def __init__(
        self,
        stage_channels: Sequence[int],
        stage_dims: Sequence[int],
        embed_dim: int,
        use_image: bool = True,
        detach_features: bool = True,
    ):
        super().__init__()
        if len(stage_dims) < 1 or len(stage_dims) > len(stage_channels):
            raise ConfigError(
                f"pcm_stage_dims: needs 1..{len(stage_channels)} entries (one per deep stage), "
                f"got {list(stage_dims)}"
            )
        if min(stage_dims) < 1 or embed_dim < 1:
            raise ConfigError("pcm_stage_dims/pcm_embed_dim: embedding sizes must be positive")
        in_channels = list(stage_channels)[-len(stage_dims):]
        self.num_stages = len(stage_dims)
        self.use_image = use_image
        self.detach_features = detach_features
        self.stage_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.ReLU(inplace=True))
            for c_in, c_out in zip(in_channels, stage_dims)
        )
        fused = sum(stage_dims) + (3 if use_image else 0)
        self.fuse = nn.Conv2d(fused, embed_dim, 1, bias=False)

    def forward(self, features: Sequence[torch.Tensor], image: torch.Tensor | None = None) -> torch.Tensor:
        grid = features[-1].shape[-2:]
        parts = []
        if self.use_image:
            if image is None:
                raise ValueError("CorrelationEmbedding(use_image=True) needs the (normalised) image")
            parts.append(F.interpolate(image, size=grid, mode="bilinear", align_corners=False))
        for proj, feat in zip(self.stage_proj, features[-self.num_stages:]):
            feat = feat.detach() if self.detach_features else feat
            if feat.shape[-2:] != grid:
                feat = F.interpolate(feat, size=grid, mode="bilinear", align_corners=False)
            parts.append(proj(feat))
        return self.fuse(torch.cat(parts, dim=1))


def pixel_affinity(embedding: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Dense PCM affinity (B, N, N) of an embedding (B, D, h, w): ReLU(cosine), each row summing to 1.
    For inspection and tests; :func:`pcm_propagate` applies it block-wise."""
    unit = F.normalize(embedding.flatten(2), dim=1, eps=eps)
    affinity = F.relu(unit.transpose(1, 2) @ unit)
    return affinity / affinity.sum(dim=-1, keepdim=True).clamp_min(eps)


def pcm_propagate(
    cams: torch.Tensor, embedding: torch.Tensor, chunk_size: int = 4096, eps: float = EPS
) -> torch.Tensor:
    """SEAM eq. 6: ``refined_i = sum_j a_ij cam_j`` with ``a`` = :func:`pixel_affinity`, computed for
    ``chunk_size`` query pixels at a time. ``cams`` (B, K, h, w) and ``embedding`` (B, D, h, w)."""
    b, k, h, w = cams.shape
    if embedding.shape[0] != b or embedding.shape[-2:] != (h, w):
        raise ValueError(f"pcm_propagate: cams {tuple(cams.shape)} and embedding {tuple(embedding.shape)} differ")
    unit = F.normalize(embedding.flatten(2), dim=1, eps=eps)  # (B, D, N)
    values = cams.flatten(2)  # (B, K, N)
    blocks = []
    for start in range(0, h * w, chunk_size):
        query = unit[:, :, start : start + chunk_size]
        affinity = F.relu(query.transpose(1, 2) @ unit)  # (B, n, N)
        affinity = affinity / affinity.sum(dim=-1, keepdim=True).clamp_min(eps)
        blocks.append(values @ affinity.transpose(1, 2))  # (B, K, n)
    return torch.cat(blocks, dim=-1).view(b, k, h, w)


class PixelCorrelationModule(nn.Module):
    """SEAM's PCM: learned embedding + affinity propagation of the CAM (with its background channel)."""

    def __init__(self, stage_channels: Sequence[int], stage_dims: Sequence[int] = (64, 128),
                 embed_dim: int = 192, use_image: bool = True):
        super().__init__()
        self.embedding = CorrelationEmbedding(stage_channels, stage_dims, embed_dim, use_image)

    def forward(self, cams: torch.Tensor, features: Sequence[torch.Tensor],
                image: torch.Tensor | None = None) -> torch.Tensor:
        """``cams`` (B, K, h, w) on the last stage's grid -> refined (B, K, h, w)."""
        return pcm_propagate(cams, self.embedding(features, image))


def region_prototypes(cams: torch.Tensor, embedding: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Region features (B, K, D): the embedding averaged under each non-negative CAM channel's weights."""
    weights = cams.flatten(2)  # (B, K, N)
    pooled = weights @ embedding.flatten(2).transpose(1, 2)  # (B, K, D)
    return pooled / weights.sum(dim=-1, keepdim=True).clamp_min(eps)


def pixel_region_correlation(embedding: torch.Tensor, prototypes: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """ReLU(cosine) between every pixel (B, D, h, w) and region (B, K, D), normalised over regions:
    (B, K, h, w), each pixel's weights non-negative and summing to 1 (0 where no region is similar)."""
    b, _, h, w = embedding.shape
    pixels = F.normalize(embedding.flatten(2), dim=1, eps=eps)
    regions = F.normalize(prototypes, dim=2, eps=eps)
    similarity = F.relu(regions @ pixels)  # (B, K, N)
    similarity = similarity / similarity.sum(dim=1, keepdim=True).clamp_min(eps)
    return similarity.view(b, -1, h, w)


class PixelRegionCorrelationModule(nn.Module):
    """CPN's PRCM: region features pooled under each class's CAM; pixel-to-region similarity is the
    refined CAM. ``cams`` are non-negative, max-normalised, with the background channel first."""

    def __init__(self, stage_channels: Sequence[int], stage_dims: Sequence[int] = (64, 128),
                 embed_dim: int = 192, use_image: bool = True):
        super().__init__()
        self.embedding = CorrelationEmbedding(stage_channels, stage_dims, embed_dim, use_image)

    def forward(self, cams: torch.Tensor, features: Sequence[torch.Tensor],
                image: torch.Tensor | None = None) -> torch.Tensor:
        embedding = self.embedding(features, image)
        if cams.shape[-2:] != embedding.shape[-2:]:
            cams = F.interpolate(cams, size=embedding.shape[-2:], mode="bilinear", align_corners=False)
        return pixel_region_correlation(embedding, region_prototypes(cams, embedding))
