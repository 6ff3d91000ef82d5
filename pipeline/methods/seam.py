"""SEAM: self-supervised equivariant attention mechanism (Wang et al., CVPR 2020).

A siamese network with shared weights sees the image I and a rescaled copy A(I) (A = bilinear resize by
``scale``, 0.3 in the paper). Per branch: a bias-free 1x1 classifier gives the foreground CAM; the
Pixel Correlation Module (:class:`~pipeline.models.correlation.PixelCorrelationModule`) refines it.

Background channel: ``bg = 1 - max_c(normalised fg_c)``, computed, not learned. (SEAM's classifier has a
background output, but the authors' code overwrites it with exactly this value before PCM and in every
loss, so the learned channel would never be used.)

Loss (eq. 8): ``L = L_cls + L_ER + L_ECR`` with weights ``cls_weight : er_weight : ecr_weight`` (1:1:1):

- ``L_cls``: multilabel soft margin on the globally average-pooled CAM, averaged over both branches,
  plus ``min_pool_weight`` times :func:`~pipeline.models.correlation.low_activation_loss` of each
  branch's PCM-refined foreground (labelled classes), as the authors' code adds to it.
- ``L_ER`` (eq. 3): ``mean |A(CAM(I)) - CAM(A(I))|`` over the max-normalised foreground CAMs of the
  labelled classes (absent classes zeroed), compared at the resolution of A(I).
- ``L_ECR`` (eq. 7): ``|A(PCM(I)) - CAM(A(I))| + |A(CAM(I)) - PCM(A(I))|`` with the background channel,
  OHEM keeping the top ``ohem_ratio`` (20%) of element losses. As in the authors' implementation the raw
  CAM target keeps only its per-pixel maximal channel and is detached, and PCM gets a detached CAM, with
  the same suppression of non-maximal foreground channels, so L_ECR trains the PCM embedding.

``cam()`` returns the PCM-refined foreground CAM (what SEAM's inference uses). PCM memory: see
:mod:`pipeline.models.correlation` ((h*w)^2 per image on the feature grid).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError
from pipeline.methods.base import CamMethod
from pipeline.models.backbones.base import Backbone
from pipeline.models.correlation import (
    PixelCorrelationModule,
    add_background,
    keep_max_only,
    low_activation_loss,
    max_normalise,
    ohem_l1,
)


def equivariant_l1(transformed_cam: torch.Tensor, cam_of_transformed: torch.Tensor) -> torch.Tensor:
    """SEAM's L_ER (eq. 3): mean absolute difference between A(CAM(I)) and CAM(A(I)) (same shape)."""
    return (transformed_cam - cam_of_transformed).abs().mean()


def pcm_seed(raw_cam: torch.Tensor) -> torch.Tensor:
    """The detached CAM that PCM propagates: max-normalised fg with non-maximal fg channels zeroed at each
    pixel, and the background channel ``1 - max fg`` first: (B, C + 1, h, w)."""
    with torch.no_grad():
        fg = max_normalise(raw_cam.detach())
        background = (1.0 - fg.amax(dim=1, keepdim=True)).clamp_min(0.0)
        return torch.cat([background, keep_max_only(fg)], dim=1)


class SEAM(CamMethod):
    name = "seam"

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        scale: float = 0.3,
        cls_weight: float = 1.0,
        er_weight: float = 1.0,
        ecr_weight: float = 1.0,
        ohem_ratio: float = 0.2,
        min_pool_weight: float = 1.0,
        pcm_stage_dims: Sequence[int] = (64, 128),
        pcm_embed_dim: int = 192,
        pcm_use_image: bool = True,
    ):
        super().__init__(backbone, num_classes)
        if not scale > 0 or scale == 1.0:
            raise ConfigError(f"seam.scale: must be positive and not 1, got {scale}")
        if min(cls_weight, er_weight, ecr_weight, min_pool_weight) < 0:
            raise ConfigError("seam.*_weight: loss weights must be non-negative")
        if not 0.0 < ohem_ratio <= 1.0:
            raise ConfigError(f"seam.ohem_ratio: must be in (0, 1], got {ohem_ratio}")
        self.scale = float(scale)
        self.cls_weight, self.er_weight, self.ecr_weight = cls_weight, er_weight, ecr_weight
        self.ohem_ratio = ohem_ratio
        self.min_pool_weight = min_pool_weight
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)
        self.pcm = PixelCorrelationModule(backbone.stage_channels, pcm_stage_dims, pcm_embed_dim, pcm_use_image)

    def _branch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw fg CAM (B, C, h, w) and PCM-refined CAM with background (B, C + 1, h, w)."""
        features = self.backbone(images)
        raw = self.classifier(features[-1])
        refined = self.pcm(pcm_seed(raw), features, self.backbone.normalize(images))
        return raw, refined

    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = images.shape[-2:]
        size = (max(1, round(height * self.scale)), max(1, round(width * self.scale)))
        images_t = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        raw, refined = self._branch(images)
        raw_t, refined_t = self._branch(images_t)

        cls = 0.5 * (
            F.multilabel_soft_margin_loss(raw.mean(dim=(2, 3)), labels)
            + F.multilabel_soft_margin_loss(raw_t.mean(dim=(2, 3)), labels)
        )
        fg_mask = labels[:, :, None, None]
        low = 0.5 * (low_activation_loss(refined[:, 1:] * fg_mask) + low_activation_loss(refined_t[:, 1:] * fg_mask))

        def at_size(x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

        cam_a = at_size(max_normalise(raw)) * fg_mask  # A(CAM(I))
        cam_b = at_size(max_normalise(raw_t)) * fg_mask  # CAM(A(I))
        er = equivariant_l1(cam_a, cam_b)

        bg_mask = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)[:, :, None, None]
        pcm_a = at_size(max_normalise(refined)) * bg_mask  # A(PCM(I))
        pcm_b = at_size(max_normalise(refined_t)) * bg_mask  # PCM(A(I))
        target_a = add_background(keep_max_only(cam_a)).detach()
        target_b = add_background(keep_max_only(cam_b)).detach()
        ecr = ohem_l1(pcm_a, target_b, self.ohem_ratio) + ohem_l1(pcm_b, target_a, self.ohem_ratio)

        loss = self.cls_weight * (cls + self.min_pool_weight * low) + self.er_weight * er + self.ecr_weight * ecr
        return {"loss": loss, "cls": cls.detach(), "min": low.detach(), "er": er.detach(), "ecr": ecr.detach()}

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        _, refined = self._branch(images)
        return refined[:, 1:]
