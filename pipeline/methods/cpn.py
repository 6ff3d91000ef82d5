"""CPN: complementary patch network (Zhang et al., ICCV 2021).

Each training image I gets a complementary patch pair: I1 hides a random half of the image's patches
(grid cells, or SLIC superpixels as in the paper's best setting, n = 300) and I2 hides exactly the other
half (:func:`complementary_masks`). Hidden pixels take the backbone's neutral colour (the colour its input
normalisation maps to zero, i.e. the dataset mean, as when a normalised image is multiplied by a 0/1 mask).
One shared-weight forward over the triplet (I, I1, I2).

Per image of the triplet: the raw CAM from a bias-free 1x1 classifier, and its refinement by the
Pixel-Region Correlation Module (PRCM), which gets the detached max-normalised CAM of the labelled classes
with the background ``1 - max fg``. Below, N(.) is ReLU + per-map max normalisation times the label mask,
and every refined map gets its background channel recomputed as ``1 - max fg`` (as in the authors' code,
which CPN builds on SEAM's).

Loss = ``cls_weight * (L_cls + min_pool_weight * L_min) + cp_weight * L_CP + prcm_weight * L_CR``:

- ``L_cls``: multilabel soft margin on the averaged raw CAM of each of I, I1, I2 (mean of the three).
- ``L_min``: :func:`~pipeline.models.correlation.low_activation_loss` of the refined maps (mean of the
  three; from the authors' SEAM/CPN code).
- ``L_CP`` (eq. 2), on raw and on refined maps: ``|sg(N(CAM(I1)) + N(CAM(I2))) - N(CAM(I))|`` (the
  halves' sum is the target: only the full-image CAM is pulled towards what the two halves find on their
  own, so it covers the less discriminative parts; letting gradient into the halves instead lets them
  follow a peaked full-image CAM, which collapsed CAMs to peaks in our runs) plus
  ``|N(R(I)) - N(R(I1)) - N(R(I2))|`` on the refined maps R (trains the PRCM embedding). Both averaged
  over the labelled (image, class) maps and pixels.
- ``L_CR``, complementary cross regularisation with OHEM (top ``ohem_ratio``, 20%): what the full image
  finds that I1 does not, ``ReLU(N(CAM(I)) - N(CAM(I1)))``, reduced to its per-pixel maximal channel,
  with background, and detached, is the target of the refined map of I2, and symmetrically for I1.

``cam()`` returns the PRCM-refined foreground channels (``cam_source="refined"``, default, as the
authors' inference does; computed over all classes) or the raw CAM (``cam_source="raw"``).
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
    keep_max_only,
    low_activation_loss,
    max_normalise,
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


def complementary_loss(
    cam: torch.Tensor, cam1: torch.Tensor, cam2: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """CPN's L_CP on CAMs (B, C, h, w): ``|N(cam) - N(cam1) - N(cam2)|`` with N = ReLU + per-map max
    normalisation, averaged over the labelled (image, class) maps and their pixels. Pass detached halves
    to make their sum a fixed target."""
    gap = (max_normalise(cam) - max_normalise(cam1) - max_normalise(cam2)).abs() * labels[:, :, None, None]
    pixels = cam.shape[-1] * cam.shape[-2]
    return gap.sum() / (labels.sum().clamp_min(1.0) * pixels)


def neutral_colour(backbone: Backbone) -> torch.Tensor:
    """The [0, 1] RGB colour (1, 3, 1, 1) that the backbone's (per-channel affine) normalisation maps to 0."""
    probe = torch.stack([torch.zeros(3), torch.ones(3)]).view(2, 3, 1, 1)
    with torch.no_grad():
        at0, at1 = backbone.normalize(probe.to(next(backbone.buffers(), probe).device))
    return (-at0 / (at1 - at0)).view(1, 3, 1, 1).cpu()


class CPN(CamMethod):
    name = "cpn"

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
        prcm_stage_dims: Sequence[int] = (64, 128),
        prcm_embed_dim: int = 192,
        prcm_use_image: bool = True,
        cam_source: str = "refined",
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
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)
        self.prcm = PixelRegionCorrelationModule(
            backbone.stage_channels, prcm_stage_dims, prcm_embed_dim, prcm_use_image
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

    def _refine(self, raw: torch.Tensor, features: list[torch.Tensor], images: torch.Tensor,
                fg_mask: torch.Tensor | None = None) -> torch.Tensor:
        """PRCM refinement (B, C + 1, h, w) of the detached normalised CAM (with background)."""
        fg = max_normalise(raw.detach())
        if fg_mask is not None:
            fg = fg * fg_mask
        return self.prcm(add_background(fg), features, self.backbone.normalize(images))

    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        b = images.shape[0]
        keep1, keep2 = self._masks(images)
        hidden1 = images * keep1 + self.neutral * keep2
        hidden2 = images * keep2 + self.neutral * keep1
        triplet = torch.cat([images, hidden1, hidden2])
        features = self.backbone(triplet)
        raw_all = self.classifier(features[-1])
        raw, raw1, raw2 = raw_all.split(b)
        fg_mask = labels[:, :, None, None]
        refined_all = self._refine(raw_all, features, triplet, fg_mask.repeat(3, 1, 1, 1))
        refined, refined1, refined2 = refined_all[:, 1:].split(b)

        cls = torch.stack([
            F.multilabel_soft_margin_loss(x.mean(dim=(2, 3)), labels) for x in (raw, raw1, raw2)
        ]).mean()
        low = torch.stack([low_activation_loss(r * fg_mask) for r in (refined, refined1, refined2)]).mean()
        cp = complementary_loss(raw, raw1.detach(), raw2.detach(), labels) + complementary_loss(
            refined, refined1, refined2, labels
        )

        n, n1, n2 = (max_normalise(x.detach()) * fg_mask for x in (raw, raw1, raw2))
        target1 = add_background(keep_max_only(F.relu(n - n2)))
        target2 = add_background(keep_max_only(F.relu(n - n1)))
        r1, r2 = (add_background(max_normalise(x) * fg_mask) for x in (refined1, refined2))
        cross = ohem_l1(r1, target1, self.ohem_ratio) + ohem_l1(r2, target2, self.ohem_ratio)

        loss = self.cls_weight * (cls + self.min_pool_weight * low) + self.cp_weight * cp + self.prcm_weight * cross
        return {"loss": loss, "cls": cls.detach(), "min": low.detach(), "cp": cp.detach(), "cr": cross.detach()}

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        raw = self.classifier(features[-1])
        if self.cam_source == "raw":
            return raw
        return self._refine(raw, features, images)[:, 1:]
