"""DFR's dynamic kernel and the feature-consistency loss (Zhang, Xiao, Zhao, "Dynamic Feature
Regularized Loss for Weakly Supervised Semantic Segmentation", 2021).

DFR's regularised loss uses shallow features (RGB, XY) *and* deep features that change as training goes
on; a feature-consistency head, trained on pairwise relations (same / different label), supplies the deep
features; head and loss are trained together in one stage. The authors' code was never released and the
paper text is not available here, so the following choices are ours:

- Kernel form: one Gaussian over the concatenated features, W_ij = W^shallow_ij * exp(-|e_i - e_j|^2 /
  2 sigma_deep^2), e = the head's L2-normalised embedding, bilinearly resized to the loss resolution and
  detached (recomputed at every step, no gradient through the kernel, as in the dense-CRF loss where W is
  a constant). The deep factor lies in (0, 1]: it can only cut the shallow kernel between pixels the head
  separates (similar colour, different object) and leaves it unchanged where the embeddings agree; with
  the deep term off (no embeddings) the kernel is the shallow one exactly.
- Head loss: the embedding affinity a_ij = exp(-|e_i - e_j|^2 / 2 sigma_deep^2) is the very factor the
  kernel uses; pairs of labelled pixels of one image (a random subset of at most ``max_pixels`` labelled
  pixels, all their pairs) are trained with -log a_ij for the same label and -log(1 - a_ij) for different
  labels, each averaged over its pairs and weighted 1/2 (PSA's AffinityNet loss, with its fg/bg split of
  the positives merged, since scribbles label background and objects alike). Labels may be extended with
  the segmentation's confident predictions (done by the caller).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError

IGNORE_INDEX = 255


def deep_features(embeddings: torch.Tensor, size: tuple[int, int], sigma_deep: float) -> torch.Tensor:
    """(B, P, E) kernel columns for embeddings (B, E, h, w): resized bilinearly to ``size``, L2-normalised,
    divided by ``sigma_deep`` and detached."""
    if sigma_deep <= 0:
        raise ConfigError(f"single.sigma_deep: must be > 0, got {sigma_deep}")
    e = embeddings.detach().float()
    if tuple(e.shape[-2:]) != tuple(size):
        e = F.interpolate(e, size=size, mode="bilinear", align_corners=False)
    return (F.normalize(e, dim=1) / sigma_deep).flatten(2).transpose(1, 2)


def feature_consistency_loss(embeddings: torch.Tensor, labels: torch.Tensor, sigma_deep: float,
                             max_pixels: int = 256, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pairwise loss of embeddings (B, E, h, w) on the labelled pixels of ``labels`` (B, H, W), 255 =
    unlabelled. Embeddings are sampled bilinearly at the labelled pixels' centres (scribbles are thinner
    than the feature grid). 0 (differentiable) when no image has both kinds of pairs' ingredients."""
    if sigma_deep <= 0:
        raise ConfigError(f"single.sigma_deep: must be > 0, got {sigma_deep}")
    height, width = labels.shape[-2:]
    pos_terms, neg_terms = [], []
    for i in range(labels.shape[0]):
        ys, xs = torch.nonzero(labels[i] != IGNORE_INDEX, as_tuple=True)
        if ys.numel() < 2:
            continue
        if ys.numel() > max_pixels:
            keep = torch.randperm(ys.numel(), generator=generator)[:max_pixels].to(ys.device)
            ys, xs = ys[keep], xs[keep]
        cls = labels[i, ys, xs].long()
        grid = torch.stack([(xs.float() + 0.5) / width * 2 - 1, (ys.float() + 0.5) / height * 2 - 1], dim=1)
        sampled = F.grid_sample(embeddings[i : i + 1].float(), grid[None, None], mode="bilinear",
                                align_corners=False)[0, :, 0].t()                       # (M, E)
        e = F.normalize(sampled, dim=1)
        # -log a_ij = |e_i - e_j|^2 / 2 sigma^2 = (1 - e_i . e_j) / sigma^2 for unit vectors: one (M, M)
        # product instead of an (M, M, E) difference tensor (4x faster forward and backward at M = 256)
        x = (1.0 - e @ e.t()).clamp(min=0.0) / sigma_deep**2
        same = cls[:, None] == cls[None]
        off_diagonal = ~torch.eye(len(cls), dtype=torch.bool, device=cls.device)
        pos, neg = same & off_diagonal, ~same
        if pos.any():
            pos_terms.append(x[pos])
        if neg.any():
            neg_terms.append(-torch.log(-torch.expm1(-x[neg].clamp(min=1e-6))))       # -log(1 - a_ij)
    zero = embeddings.sum() * 0.0
    pos_loss = torch.cat(pos_terms).mean() if pos_terms else zero
    neg_loss = torch.cat(neg_terms).mean() if neg_terms else zero
    return 0.5 * pos_loss + 0.5 * neg_loss
