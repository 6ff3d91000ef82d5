"""SEAM: self-supervised equivariant attention mechanism (Wang et al., CVPR 2020).

A siamese network with shared weights sees the image I and a rescaled copy A(I) (A = bilinear resize by
``scale``, 0.3 in the paper); the two branches are separate forwards (as the authors' code does), so each
batch-norm pass sees one kind of image. Per branch: a bias-free 1x1 classifier gives the foreground CAM;
the Pixel Correlation Module (:class:`~pipeline.models.correlation.PixelCorrelationModule`) refines the
detached seed (:func:`~pipeline.models.correlation.correlation_seed`: max-normalised CAM of every class,
non-maximal foreground channels zeroed, background ``1 - max fg`` first) using mid-level backbone stages
(``pcm_stages``, default ``(-3, -2)``: ResNet-38's b4 + b5 and their equivalents, see
:mod:`pipeline.models.correlation`) and the image.

Below, N(.) is SEAM's training normalisation ``max_norm``
(:func:`~pipeline.models.correlation.minmax_normalise`: ReLU, subtract the map's minimum, divide by the
range), times the label mask (background always on). Loss (eq. 8):
``L = cls_weight * (L_cls + min_pool_weight * L_min) + er_weight * L_ER + ecr_weight * L_ECR`` (1:1:1):

- ``L_cls``: multilabel soft margin on the globally average-pooled CAM, averaged over both branches.
- ``L_min``: :func:`~pipeline.models.correlation.low_activation_loss` of each branch's PCM output
  (labelled foreground), averaged; the authors' code adds it to L_cls.
- ``L_ER`` (eq. 3): ``mean |A(N(CAM(I))) - N(CAM(A(I)))|`` over all foreground channels (absent classes
  zeroed), at the resolution of A(I).
- ``L_ECR`` (eq. 7): ``|A(N(PCM(I))) - T(A(I))| + |N(PCM(A(I))) - T(I)|``, OHEM keeping the top
  ``ohem_ratio`` (20%) of the (channels x pixels) element losses per image. The target T is the other
  branch's N(CAM) with background ``1 - max fg`` and only the per-pixel maximal foreground channel kept
  (``max_onehot``), detached; the PCM output's own (refined) background channel is compared with it.

``cam()`` returns the PCM-refined foreground (SEAM's inference); its read-out is min-max normalised
(``readout_norm = "minmax"``, as infer_SEAM.py). PCM memory: see :mod:`pipeline.models.correlation`.

Departures from the authors' code (YudeWang/SEAM), kept on purpose:

- No classifier output for the background: theirs is overwritten by ``1 - max fg`` before PCM and in
  every loss, so it is never used.
- No Dropout2d(0.5) before the classifier: it belongs to their ResNet-38 head (b7); the backbones here
  end in their own head, and plain CAM here has none either, so the comparison stays like for like.
- Normalisation happens on the feature grid, then maps are resized; theirs upsamples to the input first.
  Bilinear upsampling keeps a map's minimum and maximum, so the normalised values agree.
- Resizes use ``align_corners=False`` (theirs: True): immaterial at these factors.
- One learning rate for all new layers (theirs gives biases 2x; these layers have none).
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
    correlation_seed,
    keep_max_only,
    low_activation_loss,
    minmax_normalise,
    ohem_l1,
)


def equivariant_l1(transformed_cam: torch.Tensor, cam_of_transformed: torch.Tensor) -> torch.Tensor:
    """SEAM's L_ER (eq. 3): mean absolute difference between A(CAM(I)) and CAM(A(I)) (same shape)."""
    return (transformed_cam - cam_of_transformed).abs().mean()


class SEAM(CamMethod):
    name = "seam"
    readout_norm = "minmax"

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
        pcm_stages: Sequence[int] = (-3, -2),
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
        nn.init.xavier_uniform_(self.classifier.weight)  # SEAM's fc8
        self.pcm = PixelCorrelationModule(
            backbone.stage_channels, pcm_stages, pcm_stage_dims, pcm_embed_dim, pcm_use_image
        )

    def _branch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw fg CAM (B, C, h, w) and PCM-refined CAM with background (B, C + 1, h, w)."""
        features = self.backbone(images)
        raw = self.classifier(features[-1])
        refined = self.pcm(correlation_seed(raw), features, self.backbone.normalize(images))
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

        cam_a = at_size(minmax_normalise(raw)) * fg_mask  # A(CAM(I))
        cam_b = at_size(minmax_normalise(raw_t)) * fg_mask  # CAM(A(I))
        er = equivariant_l1(cam_a, cam_b)

        bg_mask = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)[:, :, None, None]
        pcm_a = at_size(minmax_normalise(refined)) * bg_mask  # A(PCM(I))
        pcm_b = at_size(minmax_normalise(refined_t)) * bg_mask  # PCM(A(I))
        target_a = add_background(keep_max_only(cam_a)).detach()
        target_b = add_background(keep_max_only(cam_b)).detach()
        ecr = ohem_l1(pcm_a, target_b, self.ohem_ratio) + ohem_l1(pcm_b, target_a, self.ohem_ratio)

        loss = self.cls_weight * (cls + self.min_pool_weight * low) + self.er_weight * er + self.ecr_weight * ecr
        return {"loss": loss, "cls": cls.detach(), "min": low.detach(), "er": er.detach(), "ecr": ecr.detach()}

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        _, refined = self._branch(images)
        return refined[:, 1:]
