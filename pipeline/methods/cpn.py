"""CPN: complementary patch network (Zhang et al., ICCV 2021), as the authors' code builds it
(Ferenas/CPN: network/resnet38_CPN.py, train_cpn.py, infer_cam.py; CPN extends SEAM's code).

Each training image I gets a complementary patch pair: I1 hides a random half of the image's patches
(grid cells, or SLIC superpixels as in the paper's best setting, n = 300) and I2 hides exactly the other
half (:func:`complementary_masks`). Hidden pixels take the backbone's neutral colour (the colour its input
normalisation maps to zero, i.e. the dataset mean, as the authors multiply the normalised image by a 0/1
mask). The triplet (I, I1, I2) goes through the shared-weight network in three separate forwards
(``separate_forward``, as the authors), so half-grey images never share batch-norm statistics with I.

Per image: the raw CAM from a bias-free 1x1 classifier, and its refinement
(:class:`~pipeline.models.correlation.PixelRegionCorrelationModule`): SEAM's pixel-to-pixel PCM of the
seed **plus** the region term (softmax over pixels of ReLU'd embeddings against per-class context vectors)
times the seed. The seed (:func:`~pipeline.models.correlation.correlation_seed`) is the detached
max-normalised CAM of every class, each pixel keeping only its maximal foreground class, background
``1 - max fg`` first: no label mask, in training as in inference. The correlation layers see mid-level
backbone stages (``prcm_stages``, default ``(-3, -2)``: ResNet-38's b4 + b5 and their equivalents).

Below, N(.) is SEAM's ``max_norm`` (:func:`~pipeline.models.correlation.minmax_normalise`) times the label
mask (background on), and w1, w2 = 1 - w1 are the fractions of pixels I1 and I2 keep (:func:`kept_fraction`).
Loss = ``cls_weight * (L_cls + min_pool_weight * L_min) + cp_weight * L_CP + prcm_weight * L_CR``:

- ``L_cls``: multilabel soft margin on the averaged raw CAM of each of I, I1, I2 (mean of the three).
- ``L_min``: :func:`~pipeline.models.correlation.low_activation_loss` of the refined maps (labelled
  foreground; mean of the three).
- ``L_CP`` (eq. 2, :func:`complementary_loss`): ``mean |sg(w1 N(CAM(I1)) + w2 N(CAM(I2))) - N(CAM(I))|``
  plus ``mean |N(R(I)) - w1 N(R(I1)) - w2 N(R(I2))|`` on the refined maps R, each averaged over all
  foreground channels (absent classes are zero and count) and pixels. The target is a weighted average
  of the halves, not their sum; only the raw halves are detached, as the authors.
- ``L_CR``, complementary cross regularisation with OHEM (top ``ohem_ratio``, 20%): with every map's
  background set to ``1 - max fg``, the target for I2's refined map is ``max_onehot(N(CAM(I)) -
  w1 N(CAM(I1)))`` over all channels, background included (:func:`cross_target`), detached; symmetrically
  for I1. Predictions are ``w N(R)`` with background ``1 - max fg``.

``cam()`` returns the refined foreground channels (``cam_source="refined"``, default, as the authors'
inference) or the raw CAM (``cam_source="raw"``); the read-out is min-max normalised as infer_cam.py.

Departures from the authors' code, kept on purpose:

- Exactly half of the patches are hidden (the paper's 50%); their code draws ``floor(n / 2)`` patch ids
  with replacement, so fewer are hidden on average. The w1/w2 weighting covers either.
- No classifier output for the background, no Dropout2d before the classifier, normalisation on the
  feature grid, ``align_corners=False``: as in :mod:`pipeline.methods.seam`, for the same reasons.
- Their read-out halves the normalised CAM ("saves time for the best background searching"); not done
  here: it only moves the best threshold.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError, DataError
from pipeline.methods.base import CamMethod
from pipeline.models.backbones.base import Backbone
from pipeline.models.correlation import (
    PixelRegionCorrelationModule,
    add_background,
    correlation_seed,
    keep_max_only,
    low_activation_loss,
    minmax_normalise,
    ohem_l1,
)

PATCH_MODES = ("grid", "slic")
CAM_SOURCES = ("raw", "refined")


def complementary_masks(
    height: int,
    width: int,
    rng: np.random.Generator,
    mode: str = "grid",
    grid_size: int = 4,
    n_segments: int = 300,
    image: np.ndarray | None = None,
    compactness: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean (height, width) masks of the pixels KEPT in I1 and I2: exact complements.

    The image is cut into regions (``grid``: a ``grid_size`` x ``grid_size`` grid of near-equal cells;
    ``slic``: SLIC superpixels of ``image`` (H, W, 3) in [0, 1], about ``n_segments``, capped at the pixel
    count for small images); a random half (floor(n / 2)) of the regions is hidden in I1, the rest in I2.
    """
    if mode == "grid":
        if not 2 <= grid_size <= min(height, width):
            raise ConfigError(
                f"cpn.grid_size: must be in 2..{min(height, width)} for a {height}x{width} image, got {grid_size}"
            )
        rows = np.arange(height) * grid_size // height
        cols = np.arange(width) * grid_size // width
        regions = rows[:, None] * grid_size + cols[None, :]
    elif mode == "slic":
        from skimage.segmentation import slic

        if n_segments < 2:
            raise ConfigError(f"cpn.n_segments: must be at least 2, got {n_segments}")
        if image is None or image.shape[:2] != (height, width) or image.ndim != 3:
            raise DataError(f"complementary_masks: slic needs the ({height}, {width}, 3) image")
        regions = slic(image, n_segments=min(n_segments, height * width), compactness=compactness,
                       start_label=0, channel_axis=-1)
    else:
        raise ConfigError(f"cpn.patch_mode: unknown {mode!r}; choose one of {', '.join(PATCH_MODES)}")
    ids = np.unique(regions)
    hidden = rng.permutation(ids)[: len(ids) // 2]
    keep1 = ~np.isin(regions, hidden)
    return keep1, ~keep1


def kept_fraction(keep: torch.Tensor) -> torch.Tensor:
    """Per-image fraction (B, 1, 1, 1) of the pixels a keep-mask (B, 1, H, W) keeps: the weight of that
    half's CAM in CPN's complementary target (the authors' ``contri_rate``)."""
    return keep.mean(dim=(1, 2, 3), keepdim=True)


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


def neutral_colour(backbone: Backbone) -> torch.Tensor:
    """The [0, 1] RGB colour (1, 3, 1, 1) that the backbone's (per-channel affine) normalisation maps to 0."""
    probe = torch.stack([torch.zeros(3), torch.ones(3)]).view(2, 3, 1, 1)
    with torch.no_grad():
        at0, at1 = backbone.normalize(probe.to(next(backbone.buffers(), probe).device))
    return (-at0 / (at1 - at0)).view(1, 3, 1, 1).cpu()


class CPN(CamMethod):
    name = "cpn"
    readout_norm = "minmax"

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        patch_mode: str = "grid",
        grid_size: int = 4,
        n_segments: int = 300,
        slic_compactness: float = 10.0,
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
    ):
        super().__init__(backbone, num_classes)
        if patch_mode not in PATCH_MODES:
            raise ConfigError(f"cpn.patch_mode: unknown {patch_mode!r}; choose one of {', '.join(PATCH_MODES)}")
        if cam_source not in CAM_SOURCES:
            raise ConfigError(f"cpn.cam_source: unknown {cam_source!r}; choose one of {', '.join(CAM_SOURCES)}")
        if grid_size < 2 or n_segments < 2:
            raise ConfigError("cpn.grid_size/n_segments: need at least 2 (so that a half can be hidden)")
        if min(cls_weight, cp_weight, prcm_weight, min_pool_weight) < 0:
            raise ConfigError("cpn.*_weight: loss weights must be non-negative")
        if not 0.0 < ohem_ratio <= 1.0:
            raise ConfigError(f"cpn.ohem_ratio: must be in (0, 1], got {ohem_ratio}")
        self.patch_mode, self.grid_size = patch_mode, grid_size
        self.n_segments, self.slic_compactness = n_segments, slic_compactness
        self.cls_weight, self.cp_weight, self.prcm_weight = cls_weight, cp_weight, prcm_weight
        self.ohem_ratio, self.cam_source = ohem_ratio, cam_source
        self.min_pool_weight = min_pool_weight
        self.separate_forward = separate_forward
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)  # the authors' fc8
        self.prcm = PixelRegionCorrelationModule(
            backbone.stage_channels, prcm_stages, prcm_stage_dims, prcm_embed_dim, prcm_use_image
        )
        self.register_buffer("neutral", neutral_colour(backbone), persistent=False)

    def _masks(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image complementary keep-masks (B, 1, H, W), drawn from torch's seeded global generator."""
        b, _, h, w = images.shape
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        pictures = images.detach().permute(0, 2, 3, 1).cpu().numpy() if self.patch_mode == "slic" else [None] * b
        pairs = [
            complementary_masks(h, w, rng, self.patch_mode, self.grid_size, self.n_segments, pictures[i],
                                self.slic_compactness)
            for i in range(b)
        ]
        keep1 = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None].to(images.device, images.dtype)
        return keep1, 1.0 - keep1

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw fg CAM (B, C, h, w) and refined CAM with background (B, C + 1, h, w)."""
        features = self.backbone(images)
        raw = self.classifier(features[-1])
        refined = self.prcm(correlation_seed(raw), features, self.backbone.normalize(images))
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
        w2 = 1.0 - w1

        fg_mask = labels[:, :, None, None]
        bg_mask = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)[:, :, None, None]
        cls = torch.stack([
            F.multilabel_soft_margin_loss(x.mean(dim=(2, 3)), labels) for x in (raw, raw1, raw2)
        ]).mean()
        low = torch.stack([low_activation_loss(r[:, 1:] * fg_mask) for r in (refined, refined1, refined2)]).mean()

        n, n1, n2 = (w * minmax_normalise(x) * fg_mask for w, x in ((1.0, raw), (w1, raw1), (w2, raw2)))
        r, r1, r2 = (w * minmax_normalise(x) * bg_mask for w, x in ((1.0, refined), (w1, refined1), (w2, refined2)))
        cp = complementary_loss(n, n1.detach(), n2.detach()) + complementary_loss(r[:, 1:], r1[:, 1:], r2[:, 1:])

        c, c1, c2 = (add_background(x.detach()) for x in (n, n1, n2))
        target_for_2, target_for_1 = cross_target(c, c1), cross_target(c, c2)
        pred1, pred2 = add_background(r1[:, 1:]), add_background(r2[:, 1:])
        cross = ohem_l1(pred2, target_for_2, self.ohem_ratio) + ohem_l1(pred1, target_for_1, self.ohem_ratio)

        loss = self.cls_weight * (cls + self.min_pool_weight * low) + self.cp_weight * cp + self.prcm_weight * cross
        return {"loss": loss, "cls": cls.detach(), "min": low.detach(), "cp": cp.detach(), "cr": cross.detach()}

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        if self.cam_source == "raw":
            return self.classifier(self.backbone(images)[-1])
        return self._forward(images)[1][:, 1:]
