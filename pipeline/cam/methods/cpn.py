"""CPN: complementary patch network (Zhang et al., ICCV 2021), as the authors' code computes it
(Ferenas/CPN aca29f3: network/resnet38_CPN.py, train_cpn.py, tool/imutils.py, infer_cam.py; CPN extends
SEAM's code, see :mod:`pipeline.cam.methods.seam`).

Each training image I gets a complementary patch pair: I1 hides some of the image's patches and I2 hides
exactly the others (:func:`complementary_masks`). Patches are, as the authors' ``hide_patch_ss``, SLIC
superpixels (compactness 10) of the **normalised** image tensor, ``n_segments`` = 300 for the authors'
448 x 448 crops, scaled here by the training crop's area (``n_segments * H * W / slic_reference_size^2``:
75 at 224); ``patch_mode="grid"`` uses a ``grid_size`` x ``grid_size`` grid instead. Which patches I1
hides is drawn as the authors (``hide_draw="authors"``): ``floor((n + 1) / 2)`` ids drawn with replacement
from ``0..n`` (id 0 is no superpixel), so fewer than half are hidden on average. Hidden pixels take the
backbone's neutral colour (the colour its input normalisation maps to zero, i.e. the dataset mean, as the
authors multiply the normalised image by a 0/1 mask). The triplet (I, I1, I2) goes through the
shared-weight network in three separate forwards (``separate_forward``, as the authors), so half-grey
images never share batch-norm statistics with I.

Per image: the raw CAM from a bias-free 1x1 classifier, and its refinement
(:class:`~pipeline.cam.methods.correlation.PixelRegionCorrelationModule`): SEAM's pixel-to-pixel PCM of the
seed **plus** the region term (softmax over pixels of ReLU'd embeddings against keys from the region
context vectors, in the authors' key layout, ``key_layout``) times the seed. The seed
(:func:`~pipeline.cam.maps.correlation_seed`) is the detached max-normalised CAM of every class,
each pixel keeping only its maximal foreground class, background ``1 - max fg`` first: no label mask, in
training as in inference. The correlation layers see mid-level backbone stages (``prcm_stages``, default
``(-3, -2)``: ResNet-38's b4 + b5 and their equivalents). As the authors' ``Net.forward``, both outputs
are resized to the input size (bilinear, ``align_corners=True``) before any loss or normalisation
(``resolution="input"``).

Below, N(.) is SEAM's ``max_norm`` (:func:`~pipeline.cam.maps.minmax_normalise`) at the input
size, times the label mask (background on), and w1, w2 = 1 - w1 are the fractions of pixels I1 and I2
keep (:func:`kept_fraction`, the authors' ``contri_rate``). Loss (train_cpn.py) = ``cls_weight * (L_cls +
min_pool_weight * L_min) + cp_weight * L_CP + prcm_weight * L_CR``:

- ``L_cls``: multilabel soft margin on the averaged raw CAM of each of I, I1, I2 (mean of the three).
- ``L_min``: :func:`~pipeline.cam.methods.correlation.low_activation_loss` of the refined maps (labelled
  foreground; mean of the three).
- ``L_CP`` (eq. 2, :func:`complementary_loss`): ``mean |sg(w1 N(CAM(I1)) + w2 N(CAM(I2))) - N(CAM(I))|``
  plus ``mean |N(R(I)) - w1 N(R(I1)) - w2 N(R(I2))|`` on the refined maps R, each averaged over all
  foreground channels (absent classes are zero and count) and pixels; only the raw halves are detached.
- ``L_CR``, complementary cross regularisation with OHEM (top ``ohem_ratio``, 20%): with every map's
  background set to ``1 - max fg``, the target for I2's refined map is ``max_onehot(N(CAM(I)) -
  w1 N(CAM(I1)))`` over all channels, background included (:func:`cross_target`), detached; symmetrically
  for I1. Predictions are ``w N(R)`` with background ``1 - max fg``.

``cam()`` returns the refined foreground channels (``cam_source="refined"``, default, as the authors'
inference) or the raw CAM (``cam_source="raw"``), at the input size; the read-out resizes them to the
image (``align_corners=False``) and min-max normalises them as infer_cam.py.

Options that depart from the authors' code (defaults are the authors'):

- ``key_layout="per_class"``: one key per region from its own context, as the paper reads (issue 18;
  the refined map, L_CP and the f9/f10 gradients all change).
- ``resolution="grid"``, ``align_corners=False``: as in :mod:`pipeline.cam.methods.seam`.
- ``patch_mode="grid"``; ``slic_reference_size=0`` (``n_segments`` as it is, whatever the crop);
  ``hide_draw="half"`` (exactly ``floor(n / 2)`` distinct patches hidden, the paper's 50%).

Kept departures that do not change what is computed or that belong to the backbone:

- No classifier output for the background and no Dropout2d before the classifier: as in
  :mod:`pipeline.cam.methods.seam`, for the same reasons.
- Their read-out halves the normalised CAM ("saves time for the best background searching"); not done
  here: every background threshold t on their map is the threshold 2t on this one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.cam.maps import add_background, correlation_seed, keep_max_only, minmax_normalise
from pipeline.cam.methods.base import CamMethod
from pipeline.cam.methods.complementary_patches import (
    HIDE_DRAWS,
    PATCH_MODES,
    complementary_masks,
    kept_fraction,
    neutral_colour,
    scaled_segments,
)
from pipeline.cam.methods.correlation import PixelRegionCorrelationModule, low_activation_loss, ohem_l1, resize
from pipeline.cam.methods.seam import check_resolution
from pipeline.errors import ArgumentError
from pipeline.models.backbones.base import Backbone

CAM_SOURCES = ("raw", "refined")


def complementary_loss(full: torch.Tensor, half1: torch.Tensor, half2: torch.Tensor) -> torch.Tensor:
    """CPN's L_CP: ``mean |full - half1 - half2|`` over images, channels and pixels, for normalised maps
    whose halves are already weighted by :func:`kept_fraction` (so their sum is a weighted average).
    Pass detached halves to make them a fixed target."""
    return (full - half1 - half2).abs().mean()


def cross_target(full: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """CPN's cross-regularisation target: ``max_onehot(full - half)``: the raw difference of two maps
    (B, C + 1, h, w) with their background channels, each pixel keeping only its maximal channel over all
    channels, background included (others 0; the kept value may be negative)."""
    return keep_max_only(full - half)


def complementary_terms(
    raws: Sequence[torch.Tensor],
    refineds: Sequence[torch.Tensor],
    w1: torch.Tensor,
    labels: torch.Tensor,
    ohem_ratio: float = 0.2,
) -> dict[str, torch.Tensor]:
    """CPN's L_CP and L_CR (Ferenas/CPN train_cpn.py, from the max_norm of the three forwards to
    loss_cpcr) from the raw foreground CAMs (B, C, H, W) and the refined maps with background
    (B, C + 1, H, W) of (I, I1, I2), the weight ``w1`` (B, 1, 1, 1) of I1 (I2's is ``1 - w1``) and the
    labels (B, C). Returns ``cp_raw``, ``cp_refined`` (the two halves of L_CP), ``cr_for_2``, ``cr_for_1``
    (L_CR of I2's and I1's refined maps) and ``target_for_2`` (the detached target of I2's map)."""
    fg_mask = labels[:, :, None, None]
    bg_mask = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)[:, :, None, None]
    weights = (1.0, w1, 1.0 - w1)
    n, n1, n2 = (w * minmax_normalise(x) * fg_mask for w, x in zip(weights, raws))
    r, r1, r2 = (w * minmax_normalise(x) * bg_mask for w, x in zip(weights, refineds))
    c, c1, c2 = (add_background(x.detach()) for x in (n, n1, n2))
    target_for_2, target_for_1 = cross_target(c, c1), cross_target(c, c2)
    return {
        "cp_raw": complementary_loss(n, n1.detach(), n2.detach()),
        "cp_refined": complementary_loss(r[:, 1:], r1[:, 1:], r2[:, 1:]),
        "cr_for_2": ohem_l1(add_background(r2[:, 1:]), target_for_2, ohem_ratio),
        "cr_for_1": ohem_l1(add_background(r1[:, 1:]), target_for_1, ohem_ratio),
        "target_for_2": target_for_2,
    }


class CPN(CamMethod):
    name = "cpn"
    readout_norm = "minmax"

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        patch_mode: str = "slic",
        grid_size: int = 4,
        n_segments: int = 300,
        slic_reference_size: int = 448,
        slic_compactness: float = 10.0,
        hide_draw: str = "authors",
        cls_weight: float = 1.0,
        cp_weight: float = 1.0,
        prcm_weight: float = 1.0,
        ohem_ratio: float = 0.2,
        min_pool_weight: float = 1.0,
        prcm_stages: Sequence[int] = (-3, -2),
        prcm_stage_dims: Sequence[int] = (64, 128),
        prcm_embed_dim: int = 192,
        prcm_use_image: bool = True,
        cam_source: str = "refined",
        separate_forward: bool = True,
        key_layout: str = "authors",
        resolution: str = "input",
        align_corners: bool = True,
    ):
        super().__init__(backbone, num_classes)
        if patch_mode not in PATCH_MODES:
            raise ArgumentError("patch_mode", f"unknown {patch_mode!r}; choose one of {', '.join(PATCH_MODES)}")
        if cam_source not in CAM_SOURCES:
            raise ArgumentError("cam_source", f"unknown {cam_source!r}; choose one of {', '.join(CAM_SOURCES)}")
        if hide_draw not in HIDE_DRAWS:
            raise ArgumentError("hide_draw", f"unknown {hide_draw!r}; choose one of {', '.join(HIDE_DRAWS)}")
        if slic_reference_size < 0:
            raise ArgumentError("slic_reference_size", f"must be >= 0 (0: no scaling), got {slic_reference_size}")
        if grid_size < 2 or n_segments < 2:
            raise ArgumentError("grid_size/n_segments", "need at least 2 (so that a half can be hidden)")
        if min(cls_weight, cp_weight, prcm_weight, min_pool_weight) < 0:
            raise ArgumentError("*_weight", "loss weights must be non-negative")
        if not 0.0 < ohem_ratio <= 1.0:
            raise ArgumentError("ohem_ratio", f"must be in (0, 1], got {ohem_ratio}")
        self.patch_mode, self.grid_size = patch_mode, grid_size
        self.n_segments, self.slic_compactness = n_segments, slic_compactness
        self.slic_reference_size, self.hide_draw = slic_reference_size, hide_draw
        self.resolution = check_resolution(resolution, "resolution")
        self.align_corners = align_corners
        self.cls_weight, self.cp_weight, self.prcm_weight = cls_weight, cp_weight, prcm_weight
        self.ohem_ratio, self.cam_source = ohem_ratio, cam_source
        self.min_pool_weight = min_pool_weight
        self.separate_forward = separate_forward
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)  # the authors' fc8
        self.prcm = PixelRegionCorrelationModule(
            backbone.stage_channels, prcm_stages, prcm_stage_dims, prcm_embed_dim, prcm_use_image,
            align_corners, key_layout,
        )
        self.register_buffer("neutral", neutral_colour(backbone), persistent=False)

    def _masks(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image complementary keep-masks (B, 1, H, W), drawn from torch's seeded global generator;
        SLIC sees the normalised image, as the authors'."""
        b, _, h, w = images.shape
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        pictures = [None] * b
        if self.patch_mode == "slic":
            with torch.no_grad():
                pictures = self.backbone.normalize(images.detach()).permute(0, 2, 3, 1).cpu().float().numpy()
        n_segments = scaled_segments(self.n_segments, h, w, self.slic_reference_size)
        pairs = [
            complementary_masks(h, w, rng, self.patch_mode, self.grid_size, n_segments, pictures[i],
                                self.slic_compactness, self.hide_draw)
            for i in range(b)
        ]
        keep1 = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None].to(images.device, images.dtype)
        return keep1, 1.0 - keep1

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw fg CAM (B, C, .., ..) and refined CAM with background (B, C + 1, .., ..), at the input size
        (``resolution="input"``, the authors' ``Net.forward``) or on the feature grid."""
        features = self.backbone(images)
        raw = self.classifier(features[-1])
        refined = self.prcm(correlation_seed(raw), features, self.backbone.normalize(images))
        if self.resolution == "input":
            size = images.shape[-2:]
            raw, refined = resize(raw, size, self.align_corners), resize(refined, size, self.align_corners)
        return raw, refined

    def _triplet(self, images: torch.Tensor, hidden1: torch.Tensor, hidden2: torch.Tensor):
        if self.separate_forward:
            return [self._forward(x) for x in (images, hidden1, hidden2)]
        raw, refined = self._forward(torch.cat([images, hidden1, hidden2]))
        return list(zip(raw.split(images.shape[0]), refined.split(images.shape[0])))

    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        keep1, keep2 = self._masks(images)
        hidden1 = images * keep1 + self.neutral * keep2
        hidden2 = images * keep2 + self.neutral * keep1
        (raw, refined), (raw1, refined1), (raw2, refined2) = self._triplet(images, hidden1, hidden2)
        w1 = kept_fraction(keep1)
        fg_mask = labels[:, :, None, None]
        cls = torch.stack([
            F.multilabel_soft_margin_loss(x.mean(dim=(2, 3)), labels) for x in (raw, raw1, raw2)
        ]).mean()
        low = torch.stack([low_activation_loss(r[:, 1:] * fg_mask) for r in (refined, refined1, refined2)]).mean()

        terms = complementary_terms((raw, raw1, raw2), (refined, refined1, refined2), w1, labels, self.ohem_ratio)
        cp = terms["cp_raw"] + terms["cp_refined"]
        cross = terms["cr_for_2"] + terms["cr_for_1"]

        loss = self.cls_weight * (cls + self.min_pool_weight * low) + self.cp_weight * cp + self.prcm_weight * cross
        return {"loss": loss, "cls": cls.detach(), "min": low.detach(), "cp": cp.detach(), "cr": cross.detach()}

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        if self.cam_source == "raw":
            raw = self.classifier(self.backbone(images)[-1])
            return resize(raw, images.shape[-2:], self.align_corners) if self.resolution == "input" else raw
        return self._forward(images)[1][:, 1:]
