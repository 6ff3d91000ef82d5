"""SEAM: self-supervised equivariant attention mechanism (Wang et al., CVPR 2020), as the authors' code
computes it (YudeWang/SEAM 3212261: network/resnet38_SEAM.py, train_SEAM.py, infer_SEAM.py).

A siamese network with shared weights sees the image I and a rescaled copy A(I) (A = bilinear resize by
``scale``, 0.3 in the paper, ``align_corners=True``, output size ``floor(side * scale)`` as
``F.interpolate(scale_factor=...)``); the two branches are separate forwards (as the authors' code), so
each batch-norm pass sees one kind of image. Per branch: a bias-free 1x1 classifier gives the foreground
CAM; the Pixel Correlation Module (:class:`~pipeline.cam.methods.correlation.PixelCorrelationModule`) refines
the detached seed (:func:`~pipeline.cam.maps.correlation_seed`: max-normalised CAM of every
class, non-maximal foreground channels zeroed, background ``1 - max fg`` first) using mid-level backbone
stages (``pcm_stages``, default ``(-3, -2)``: ResNet-38's b4 + b5 and their equivalents, see
:mod:`pipeline.cam.methods.correlation`) and the image. As the authors' ``Net.forward``, both outputs (raw CAM
and PCM map) are then resized to the branch's input size (bilinear, ``align_corners=True``) before any
loss or normalisation touches them (``resolution="input"``).

Below, N(.) is SEAM's training normalisation ``max_norm``
(:func:`~pipeline.cam.maps.minmax_normalise`: ReLU, subtract the map's minimum, divide by the
range), times the label mask (background always on), applied at the input size. Loss (eq. 8, the
authors' train_SEAM.py): ``L = cls_weight * (L_cls + min_pool_weight * L_min) + er_weight * L_ER +
ecr_weight * L_ECR`` (1:1:1):

- ``L_cls``: multilabel soft margin on the globally average-pooled CAM (at the input size), averaged over
  both branches.
- ``L_min``: :func:`~pipeline.cam.methods.correlation.low_activation_loss` of each branch's PCM output at the
  input size (labelled foreground), averaged; the authors' code adds it to L_cls.
- ``L_ER`` (eq. 3): ``mean |A(N(CAM(I))) - N(CAM(A(I)))|`` over all foreground channels (absent classes
  zeroed), at the size of A(I): N is applied at I's size, then A.
- ``L_ECR`` (eq. 7): ``|A(N(PCM(I))) - T(A(I))| + |N(PCM(A(I))) - T(I)|``, OHEM keeping the top
  ``ohem_ratio`` (20%) of the (channels x pixels) element losses per image. The target T is the other
  branch's N(CAM) with background ``1 - max fg`` and only the per-pixel maximal foreground channel kept
  (``max_onehot``), detached; the PCM output's own (refined) background channel is compared with it.

``cam()`` returns the PCM-refined foreground at the input size (the authors' network output), which
:func:`pipeline.cam.readout.multiscale_cam` resizes to the image (``align_corners=False``, as infer_SEAM.py) and
min-max normalises (``readout_norm = "minmax"``). PCM memory: see :mod:`pipeline.cam.methods.correlation`.

Options that depart from the authors' code (defaults are the authors'):

- ``resolution="grid"``: outputs stay on the feature grid; N, L_cls, L_min are computed there and the
  maps are resized to A(I)'s size only for L_ER / L_ECR. The ReLU inside N does not commute with the
  resize, so this changes every term, most at the CAMs' zero crossings (issue 18).
- ``align_corners=False`` for every resize inside the network and the loss (the authors': True).

Kept departures that do not change what is computed or that belong to the backbone:

- No classifier output for the background: theirs is overwritten by ``1 - max fg`` before PCM and in
  every loss, so it is never used.
- No Dropout2d(0.5) before the classifier: it belongs to their ResNet-38 head (b7); the backbones here
  end in their own head, and plain CAM here has none either, so the comparison stays like for like.
- One learning rate for all new layers (theirs gives biases 2x; these layers have none).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.cam.maps import add_background, correlation_seed, keep_max_only, minmax_normalise
from pipeline.cam.methods.base import CamMethod
from pipeline.cam.methods.correlation import PixelCorrelationModule, low_activation_loss, ohem_l1, resize
from pipeline.errors import ArgumentError
from pipeline.models.backbones.base import Backbone

RESOLUTIONS = ("input", "grid")


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The size of ``F.interpolate(x, scale_factor=scale)``: ``floor(side * scale)``, at least 1 (the
    authors' A(I) and their resize of branch I's maps to it)."""
    return max(1, math.floor(height * scale)), max(1, math.floor(width * scale))


def check_resolution(resolution: str, option: str) -> str:
    if resolution not in RESOLUTIONS:
        raise ArgumentError(option, f"unknown {resolution!r}; choose one of {', '.join(RESOLUTIONS)}")
    return resolution


def equivariant_l1(transformed_cam: torch.Tensor, cam_of_transformed: torch.Tensor) -> torch.Tensor:
    """SEAM's L_ER (eq. 3): mean absolute difference between A(CAM(I)) and CAM(A(I)) (same shape)."""
    return (transformed_cam - cam_of_transformed).abs().mean()


def equivariant_cross_terms(
    cam_a: torch.Tensor, cam_b: torch.Tensor, pcm_a: torch.Tensor, pcm_b: torch.Tensor, ohem_ratio: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """SEAM's L_ECR (eq. 7; YudeWang/SEAM train_SEAM.py, tensor_ecr1/2 and their OHEM) as its two terms:
    ``A(N(PCM(I)))`` (``pcm_a``, with its refined background) against ``max_onehot`` of ``N(CAM(A(I)))``
    (``cam_b``, foreground only, background ``1 - max fg`` added), and ``pcm_b`` against that of ``cam_a``;
    targets detached."""
    target_a = add_background(keep_max_only(cam_a)).detach()
    target_b = add_background(keep_max_only(cam_b)).detach()
    return ohem_l1(pcm_a, target_b, ohem_ratio), ohem_l1(pcm_b, target_a, ohem_ratio)


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
        resolution: str = "input",
        align_corners: bool = True,
    ):
        super().__init__(backbone, num_classes)
        if not scale > 0 or scale == 1.0:
            raise ArgumentError("scale", f"must be positive and not 1, got {scale}")
        if min(cls_weight, er_weight, ecr_weight, min_pool_weight) < 0:
            raise ArgumentError("*_weight", "loss weights must be non-negative")
        if not 0.0 < ohem_ratio <= 1.0:
            raise ArgumentError("ohem_ratio", f"must be in (0, 1], got {ohem_ratio}")
        self.scale = float(scale)
        self.cls_weight, self.er_weight, self.ecr_weight = cls_weight, er_weight, ecr_weight
        self.ohem_ratio = ohem_ratio
        self.min_pool_weight = min_pool_weight
        self.resolution = check_resolution(resolution, "resolution")
        self.align_corners = align_corners
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)  # SEAM's fc8
        self.pcm = PixelCorrelationModule(
            backbone.stage_channels, pcm_stages, pcm_stage_dims, pcm_embed_dim, pcm_use_image, align_corners
        )

    def _branch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw fg CAM (B, C, .., ..) and PCM-refined CAM with background (B, C + 1, .., ..), at the input
        size (``resolution="input"``, the authors' ``Net.forward``) or on the feature grid."""
        features = self.backbone(images)
        raw = self.classifier(features[-1])
        refined = self.pcm(correlation_seed(raw), features, self.backbone.normalize(images))
        if self.resolution == "input":
            size = images.shape[-2:]
            raw, refined = resize(raw, size, self.align_corners), resize(refined, size, self.align_corners)
        return raw, refined

    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        size = scaled_size(*images.shape[-2:], self.scale)
        raw, refined = self._branch(images)
        raw_t, refined_t = self._branch(resize(images, size, self.align_corners))

        cls = 0.5 * (
            F.multilabel_soft_margin_loss(raw.mean(dim=(2, 3)), labels)
            + F.multilabel_soft_margin_loss(raw_t.mean(dim=(2, 3)), labels)
        )
        fg_mask = labels[:, :, None, None]
        low = 0.5 * (low_activation_loss(refined[:, 1:] * fg_mask) + low_activation_loss(refined_t[:, 1:] * fg_mask))

        def at_size(x: torch.Tensor) -> torch.Tensor:  # to A(I)'s size (the identity for A(I)'s own maps)
            return resize(x, size, self.align_corners)

        cam_a = at_size(minmax_normalise(raw)) * fg_mask  # A(N(CAM(I)))
        cam_b = at_size(minmax_normalise(raw_t)) * fg_mask  # N(CAM(A(I)))
        er = equivariant_l1(cam_a, cam_b)

        bg_mask = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)[:, :, None, None]
        pcm_a = at_size(minmax_normalise(refined)) * bg_mask  # A(N(PCM(I)))
        pcm_b = at_size(minmax_normalise(refined_t)) * bg_mask  # N(PCM(A(I)))
        ecr_a, ecr_b = equivariant_cross_terms(cam_a, cam_b, pcm_a, pcm_b, self.ohem_ratio)
        ecr = ecr_a + ecr_b

        loss = self.cls_weight * (cls + self.min_pool_weight * low) + self.er_weight * er + self.ecr_weight * ecr
        return {"loss": loss, "cls": cls.detach(), "min": low.detach(), "er": er.detach(), "ecr": ecr.detach()}

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        _, refined = self._branch(images)
        return refined[:, 1:]
