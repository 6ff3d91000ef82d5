"""Correlation modules that refine a CAM with learned feature similarity (the seed they refine and the map
normalisers: :mod:`pipeline.cam.maps`), and the loss terms SEAM and CPN share.

- :class:`PixelCorrelationModule` (PCM): SEAM (Wang et al., CVPR 2020, Sec. 3.3, eq. 6), as
  YudeWang/SEAM network/resnet38_SEAM.py ``Net.PCM``. Pixel-to-pixel affinity ``ReLU(e_i . e_j)`` of the
  embeddings ``e = f9(f) / (||f9(f)|| + 1e-5)``, normalised over ``i`` (``+ 1e-5``);
  ``refined_j = sum_i a_ij * seed_i``. The affinity is (h*w) x (h*w) on the feature grid: inherent to
  PCM. At a 448 crop and stride 8 that is 3136^2 (~39 MB a float32 map per image); at stride 16 784^2
  (~2.5 MB). :func:`pcm_propagate` works in blocks of query pixels, so without autograd (CAM read-out) it
  never holds the whole matrix; in training autograd keeps every block, i.e. the full matrix per image.
- :class:`PixelRegionCorrelationModule`: CPN (Zhang et al., ICCV 2021, Sec. 3.3) as the authors' code
  builds it (Ferenas/CPN network/resnet38_CPN.py ``forward``, ``PCM``, ``PRCM``; network/da_atten.py
  ``SpatialGather_Module``): SEAM's PCM **plus** a region term. Region context vectors are ``f`` averaged
  under a softmax over pixels of each seed channel (SpatialGather, scale 1); ``f10`` projects them
  (ReLU) into keys; each pixel's ``ReLU(f9(f))`` is compared with every key, scaled by ``K^-1/2`` and
  soft-maxed over pixels; that map, times the seed, is added to the PCM output. Pixel x region is
  (h*w) x K: no second pixel-pixel matrix.

  **Key layout** (``key_layout``). The authors' PRCM reshapes f10's (B, E, K, 1) output to (B, K, E) in
  memory order, without a transpose, so the key of region r is the block ``r*E .. r*E + E - 1`` of the
  row-major (E x K) array: it mixes embedding channels of all regions' contexts (``"authors"``, the
  default; the published numbers come from it). The paper reads one key per region from its own context
  (``"per_class"``): a departure kept as an option.

Inputs, as in SEAM's and CPN's resnet38 networks: the detached **mid-level** backbone stages (ResNet-38 b4
and b5, 512 and 1024 channels, each through a bias-free 1x1 conv + ReLU: ``f8_3``, ``f8_4``) and the
normalised image resized to the CAM grid (bilinear, ``align_corners=True`` as the authors), concatenated
(``f``); a bias-free 1x1 conv ``f9`` gives the PCM embedding. The stages are chosen by index into the
backbone's feature list (``stages``, default ``(-3, -2)``), never by default the last stage, which is the
classifier's own input (an affinity built on it copies the CAM's own peaks). ``(-3, -2)`` is the b4 + b5
equivalent of every backbone here (``stage_channels``):

==================  ==========================================  =====================================
backbone            stages (shallow -> deep)                    ``(-3, -2)``
==================  ==========================================  =====================================
resnet38            b3 256, b4 512, b5 1024, b7 4096             b4 512 + b5 1024 (the reference)
resnet50/101        layer1 256, layer2 512, layer3 1024, l4 2048 layer2 512 + layer3 1024
efficientnet_lite   stride-4 block, stride-8 (40), stride-16     stride-8 block + stride-16 block
                    (112), 1280 head                             (40 + 112 on Lite0)
tiny (tests)        w, 2w, 4w, 8w                                2w + 4w
==================  ==========================================  =====================================

Stages on a finer grid than the CAM (e.g. stride 8 with output stride 16; ResNet-38's b4, b5 and b7 share
one grid, so the authors have no such resize) are resized to the CAM grid (bilinear, with the same
``align_corners`` as the image) after their 1x1 projection. Weight init as the references:
Kaiming-normal for the stage projections, Xavier-uniform with gain 4 for ``f9`` (and CPN's ``f10``).

Departures (options; the defaults are the authors'): ``align_corners=False`` for the resizes
(``align_corners``), the paper's per-region keys (``key_layout="per_class"``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.cam.maps import EPS
from pipeline.errors import ArgumentError

KEY_LAYOUTS = ("authors", "per_class")


def ohem_l1(prediction: torch.Tensor, target: torch.Tensor, top_ratio: float = 0.2) -> torch.Tensor:
    """L1 with online hard example mining: per image, the mean of the largest ``top_ratio`` fraction of the
    element-wise absolute differences over (channels x pixels) (SEAM's ECR, CPN's cross regularisation)."""
    if not 0.0 < top_ratio <= 1.0:
        raise ArgumentError("ohem_ratio", f"must be in (0, 1], got {top_ratio}")
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


def resize(x: torch.Tensor, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
    """Bilinear resize to ``size`` (the identity when the size already matches). The authors' SEAM and
    CPN resize with ``align_corners=True`` everywhere inside the network and the training loop."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def resolve_stages(stages: Sequence[int], num_stages: int, option: str) -> tuple[int, ...]:
    """Validate backbone stage indices (negative counts from the deepest) -> non-negative indices."""
    stages = tuple(stages)
    if not stages:
        raise ArgumentError(option, "needs at least one backbone stage index")
    bad = [s for s in stages if not -num_stages <= s < num_stages]
    if bad:
        raise ArgumentError(option, f"stage index {bad[0]} out of range for a {num_stages}-stage backbone")
    resolved = tuple(s % num_stages for s in stages)
    if len(set(resolved)) != len(resolved):
        raise ArgumentError(option, f"repeated stage in {list(stages)}")
    return resolved


class CorrelationFeatures(nn.Module):
    """SEAM's / CPN's ``f``: ``[image, ReLU(conv(stage_a)), ReLU(conv(stage_b)), ...]`` on the CAM grid.

    Backbone features are detached (as in the references): the correlation losses train these layers
    only; the backbone is trained by the classification and equivariance/complementarity losses.
    """

    def __init__(
        self,
        stage_channels: Sequence[int],
        stages: Sequence[int] = (-3, -2),
        stage_dims: Sequence[int] = (64, 128),
        use_image: bool = True,
        option: str = "pcm",
        align_corners: bool = True,
    ):
        super().__init__()
        self.align_corners = align_corners
        self.stages = resolve_stages(stages, len(stage_channels), f"{option}_stages")
        if len(stage_dims) != len(self.stages):
            raise ArgumentError(f"{option}_stage_dims", f"needs one size per entry of {option}_stages "
                                                        f"({len(self.stages)}), got {list(stage_dims)}")
        if min(stage_dims) < 1:
            raise ArgumentError(f"{option}_stage_dims", f"embedding sizes must be positive, got {list(stage_dims)}")
        self.use_image = use_image
        self.stage_proj = nn.ModuleList(
            nn.Conv2d(stage_channels[s], dim, 1, bias=False) for s, dim in zip(self.stages, stage_dims)
        )
        for proj in self.stage_proj:
            nn.init.kaiming_normal_(proj.weight)
        self.out_channels = sum(stage_dims) + (3 if use_image else 0)

    def forward(self, features: Sequence[torch.Tensor], image: torch.Tensor | None = None) -> torch.Tensor:
        grid = features[-1].shape[-2:]
        parts = []
        if self.use_image:
            if image is None:
                raise ValueError("CorrelationFeatures(use_image=True) needs the (normalised) image")
            parts.append(resize(image, grid, self.align_corners))
        for proj, index in zip(self.stage_proj, self.stages):
            projected = proj(features[index].detach())  # a 1x1 conv commutes with the resize below
            parts.append(F.relu(resize(projected, grid, self.align_corners)))
        return torch.cat(parts, dim=1)


def embedding_conv(in_channels: int, embed_dim: int) -> nn.Conv2d:
    """SEAM's ``f9``: a bias-free 1x1 conv, Xavier-uniform init with gain 4."""
    if embed_dim < 1:
        raise ArgumentError("embed_dim", f"must be positive, got {embed_dim}")
    conv = nn.Conv2d(in_channels, embed_dim, 1, bias=False)
    nn.init.xavier_uniform_(conv.weight, gain=4.0)
    return conv


def unit_embedding(embedding: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(B, D, h, w) -> (B, D, N): each pixel's vector divided by (its L2 norm + eps), as SEAM's PCM."""
    flat = embedding.flatten(2)
    return flat / (flat.norm(dim=1, keepdim=True) + eps)


def pixel_affinity(embedding: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Dense PCM affinity (B, N, N) of an embedding (B, D, h, w): ReLU(cosine), each row divided by (its
    sum + eps). For inspection and tests; :func:`pcm_propagate` applies it block-wise."""
    unit = unit_embedding(embedding, eps)
    affinity = F.relu(unit.transpose(1, 2) @ unit)
    return affinity / (affinity.sum(dim=-1, keepdim=True) + eps)


def pcm_propagate(
    cams: torch.Tensor, embedding: torch.Tensor, chunk_size: int = 4096, eps: float = EPS
) -> torch.Tensor:
    """SEAM eq. 6: ``refined_i = sum_j a_ij cam_j`` with ``a`` = :func:`pixel_affinity`, computed for
    ``chunk_size`` query pixels at a time. ``cams`` (B, K, h, w) and ``embedding`` (B, D, h, w)."""
    b, k, h, w = cams.shape
    if embedding.shape[0] != b or embedding.shape[-2:] != (h, w):
        raise ValueError(f"pcm_propagate: cams {tuple(cams.shape)} and embedding {tuple(embedding.shape)} differ")
    unit = unit_embedding(embedding, eps)  # (B, D, N)
    values = cams.flatten(2)  # (B, K, N)
    blocks = []
    for start in range(0, h * w, chunk_size):
        query = unit[:, :, start : start + chunk_size]
        affinity = F.relu(query.transpose(1, 2) @ unit)  # (B, n, N); symmetric, so rows = their columns
        affinity = affinity / (affinity.sum(dim=-1, keepdim=True) + eps)
        blocks.append(values @ affinity.transpose(1, 2))  # (B, K, n)
    return torch.cat(blocks, dim=-1).view(b, k, h, w)


class PixelCorrelationModule(nn.Module):
    """SEAM's PCM: ``f`` -> ``f9`` embedding -> affinity propagation of the seed (background first)."""

    def __init__(self, stage_channels: Sequence[int], stages: Sequence[int] = (-3, -2),
                 stage_dims: Sequence[int] = (64, 128), embed_dim: int = 192, use_image: bool = True,
                 align_corners: bool = True):
        super().__init__()
        self.features = CorrelationFeatures(stage_channels, stages, stage_dims, use_image, "pcm", align_corners)
        self.embed = embedding_conv(self.features.out_channels, embed_dim)

    def forward(self, seed: torch.Tensor, features: Sequence[torch.Tensor],
                image: torch.Tensor | None = None) -> torch.Tensor:
        """``seed`` (B, K, h, w) on the last stage's grid -> refined (B, K, h, w)."""
        return pcm_propagate(seed, self.embed(self.features(features, image)))


def spatial_gather(features: torch.Tensor, seed: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """CPN's SpatialGather (from OCR): one context vector per seed channel, the features (B, D, h, w)
    averaged under ``softmax over pixels (scale * seed_k)`` -> (B, K, D)."""
    weights = torch.softmax(scale * seed.flatten(2), dim=-1)  # (B, K, N)
    return weights @ features.flatten(2).transpose(1, 2)


def authors_key_layout(keys: torch.Tensor) -> torch.Tensor:
    """The authors' PRCM keys from per-region projections (B, K, E): f10's output laid out (B, E, K) in
    memory and read back as (B, K, E) without a transpose, i.e. ``key[r, j] = proj[(r*E + j) % K,
    (r*E + j) // K]``: each key mixes embedding channels of several regions (Ferenas/CPN
    network/resnet38_CPN.py, ``PRCM``: ``F.relu(self.f10(cam)).view(n, 21, -1)``)."""
    b, k, e = keys.shape
    return keys.transpose(1, 2).reshape(b, k, e)


def region_attention(pixels: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """CPN's PRCM map: ``softmax over pixels (keys . pixels / sqrt(K))`` for pixel embeddings (B, E, h, w)
    and per-region keys (B, K, E) -> (B, K, h, w); every channel sums to 1 over the pixels."""
    b, _, h, w = pixels.shape
    similarity = (keys @ pixels.flatten(2)) * keys.shape[1] ** -0.5  # (B, K, N)
    return torch.softmax(similarity, dim=-1).view(b, -1, h, w)


class PixelRegionCorrelationModule(nn.Module):
    """CPN's refinement as the authors' network computes it:
    ``PCM(seed) + seed * softmax_pixels(keys . ReLU(f9(f)) / sqrt(K))`` with ``keys`` = ``ReLU(f10(context))``
    in the authors' layout (:func:`authors_key_layout`; ``key_layout="per_class"``: one key per region, as
    the paper reads), where the context vectors are :func:`spatial_gather` of ``f`` under the seed, and
    ``f9`` is shared with the PCM term."""

    def __init__(self, stage_channels: Sequence[int], stages: Sequence[int] = (-3, -2),
                 stage_dims: Sequence[int] = (64, 128), embed_dim: int = 192, use_image: bool = True,
                 align_corners: bool = True, key_layout: str = "authors"):
        super().__init__()
        if key_layout not in KEY_LAYOUTS:
            raise ArgumentError("key_layout", f"unknown {key_layout!r}; choose one of {', '.join(KEY_LAYOUTS)}")
        self.key_layout = key_layout
        self.features = CorrelationFeatures(stage_channels, stages, stage_dims, use_image, "prcm", align_corners)
        self.embed = embedding_conv(self.features.out_channels, embed_dim)  # f9
        self.key = nn.Linear(self.features.out_channels, embed_dim, bias=False)  # f10 on (B, K, D)
        nn.init.xavier_uniform_(self.key.weight, gain=4.0)

    def forward(self, seed: torch.Tensor, features: Sequence[torch.Tensor],
                image: torch.Tensor | None = None) -> torch.Tensor:
        """``seed`` (B, K, h, w) from :func:`correlation_seed` -> refined (B, K, h, w)."""
        f = self.features(features, image)
        embedding = self.embed(f)
        keys = F.relu(self.key(spatial_gather(f, seed)))
        if self.key_layout == "authors":
            keys = authors_key_layout(keys)
        region = region_attention(F.relu(embedding), keys)
        return pcm_propagate(seed, embedding) + region * seed
