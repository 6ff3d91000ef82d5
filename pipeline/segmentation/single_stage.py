"""The single-stage branch: a segmentation network trained end to end from scribbles (or image labels)
with partial cross entropy plus a regularised loss, no pseudo-mask files.

- ``loss: pce``: partial cross entropy on the labelled pixels (Tang et al. ECCV 2018, eq. 2).
- ``loss: crf``: + the dense-CRF loss over all pixels (Tang et al., rloss;
  :mod:`pipeline.segmentation.losses.dense_crf`).
- ``loss: dfr``: + the same loss with DFR's dynamic kernel (Zhang et al. 2021): the feature-consistency
  head's embeddings (detached, recomputed every step) join RGB/XY in the kernel once
  ``deep_warmup_steps`` have passed, and the head is trained with a pairwise loss on the labelled pixels,
  optionally extended to the segmentation's confident predictions (:mod:`pipeline.segmentation.losses.dfr`).

Supervision: ``scribble`` (DFR's setting: the labels of the ``scribbles`` stage), ``image`` (image-level
labels only: seeds from the model's own CAM head, online, as single-stage WSSS methods do, ToCo / AFA:
CAM >= ``seed_fg`` -> that class, max CAM < ``seed_bg`` -> background, else ignored; the CAM head is
trained with the multilabel soft-margin loss on global average pooling, as :mod:`pipeline.cam.methods.cam`),
or ``full`` (ground truth, the upper bound of the same code).

Network, optimisation and augmentation are train_seg's (one segmentation recipe, :mod:`pipeline.segmentation.training`:
the same DeepLab with its backbone batch norms frozen, ``single.freeze_backbone_bn: auto``, the same lr and
poly schedule, the random scale of each image's own size, ``single.scale_reference: image``, and the same
loop); only the loss differs. The measurements behind the choices below (benchmarks/README.md, the
single-stage section) were made with the former recipe (lr 0.01, trained batch norms, the classification
stages' crop-fitting jitter).

Choices where the sources are silent (DFR's code and paper are not available):
- Model: the project's DeepLab head (v3 / v2, :mod:`pipeline.segmentation.deeplab`) on the backbone's last
  stage; the feature-consistency head is 1x1 conv (256) - BN - ReLU - 1x1 conv (``embed_dim``) on the
  same features; its output is L2-normalised where used. DFR used a vision transformer backbone
  (``backbone.name: vit_b_16`` / ``swin_t``); EfficientNet-Lite0 stays the offline default.
- Warm-up: the regulariser (and, with image labels, the seed loss) switch on after ``warmup_steps``
  (rloss starts from scratch with both: the stage's default is 0 with scribbles). With image labels the
  stage's default is the first third of the steps: AFA trains the CAM head alone for 10% of 20k steps, but
  at a CPU schedule of 300 steps seeds from an untrained CAM head make the segmentation collapse to
  background on MSRC (no warm-up, or 100 steps with AFA's seed thresholds 0.55 / 0.35, the defaults:
  benchmarks/README.md). The deep term waits ``deep_warmup_steps`` so
  that the head's embeddings mean something before they shape the kernel.
- Kernel width: rloss's sigma_xy of 100 px is for 513 px crops of ~500 px VOC images; the stage's
  default (``single.sigma_xy: auto``) keeps the width relative to the crop (100 * crop / 513), which
  raised both the CRF loss and DFR on MSRC (crop 160, 300 steps; benchmarks/README.md).
- Weight: rloss's 2e-9 corresponds to 8.7 here (:mod:`pipeline.segmentation.losses.dense_crf`); on MSRC at 300 steps
  it over-smooths and 2 scores best of 2 / 8.7 / 30 for both losses (benchmarks/README.md):
  ``single.crf_weight`` defaults to 2.
- The loss terms are summed: pCE + regulariser (weight ``crf_weight``) + ``fc_weight`` * pair loss
  (+ ``cls_weight`` * classification with image labels).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from pipeline.data.transforms import as_tv
from pipeline.engine import distributed
from pipeline.engine.trainer import Hook
from pipeline.errors import ConfigError, DataError
from pipeline.models.backbones.base import Backbone
from pipeline.segmentation.deeplab import SegmentationModel, build_deeplab
from pipeline.segmentation.losses import DenseCRFLoss, deep_features, feature_consistency_loss, partial_cross_entropy
from pipeline.segmentation.training import train_segmentation

IGNORE_INDEX = 255
SUPERVISIONS = ("scribble", "image", "full")
LOSSES = ("pce", "crf", "dfr")


class FeatureConsistencyHead(nn.Module):
    """Pixel embeddings for DFR's kernel: 1x1 conv - BN - ReLU - 1x1 conv (not normalised here)."""

    def __init__(self, in_ch: int, embed_dim: int, hidden: int = 256):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(in_ch, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                                    nn.ReLU(inplace=True), nn.Conv2d(hidden, embed_dim, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class SingleStageModel(SegmentationModel):
    """DeepLab as train_seg builds it (:func:`pipeline.segmentation.deeplab.build_deeplab`, backbone batch norms
    frozen with ``freeze_backbone_bn``) + the feature-consistency head and the CAM head. ``forward(images in
    [0, 1])`` -> segmentation logits at the input size; :meth:`forward_train` returns every head's output
    from one backbone pass."""

    def __init__(self, backbone: Backbone, num_classes: int, head: str = "v3", embed_dim: int | None = 64,
                 with_cam: bool = False, freeze_backbone_bn: bool = False):
        deeplab = build_deeplab(backbone, num_classes, head=head, freeze_backbone_bn=freeze_backbone_bn)
        super().__init__(backbone, deeplab.head, num_classes, head, freeze_backbone_bn)
        self.embed = FeatureConsistencyHead(backbone.out_channels, embed_dim) if embed_dim else None
        self.cam_head = nn.Conv2d(backbone.out_channels, num_classes - 1, 1, bias=False) if with_cam else None

    def forward_train(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)[-1]
        out = {"logits": F.interpolate(self.head(features), size=images.shape[-2:], mode="bilinear",
                                       align_corners=False)}
        if self.embed is not None:
            out["embeddings"] = self.embed(features)
        if self.cam_head is not None:
            out["cams"] = self.cam_head(features)
        return out

    def param_groups(self, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
        """Backbone at ``lr``, the three heads (trained from scratch) at ``lr * head_lr_mult``."""
        from pipeline.cam.methods.base import backbone_head_groups

        heads = [m for m in (self.head, self.embed, self.cam_head) if m is not None]
        return backbone_head_groups(self.backbone, heads, lr, head_lr_mult)


def cam_seeds(cams: torch.Tensor, labels: torch.Tensor, size: Sequence[int], fg: float, bg: float) -> torch.Tensor:
    """(B, H, W) seed labels from raw CAMs (B, C-1, h, w) and multi-hot ``labels`` (B, C-1): ReLU,
    max-normalised per class, absent classes zeroed, resized to ``size``; max >= fg -> argmax class,
    max < bg -> 0, else 255."""
    cams = F.relu(cams.detach().float())
    cams = cams / (cams.flatten(2).amax(-1)[..., None, None] + 1e-5) * labels[..., None, None]
    cams = F.interpolate(cams, size=tuple(size), mode="bilinear", align_corners=False)
    top, cls = cams.max(dim=1) if cams.shape[1] else (cams.new_zeros(cams.shape[0], *size), None)
    seeds = torch.full(top.shape, IGNORE_INDEX, dtype=torch.long, device=cams.device)
    seeds[top < bg] = 0
    if cls is not None:
        seeds = torch.where(top >= fg, cls + 1, seeds)
    return seeds


@dataclass
class SingleStageLoss:
    """The objective of one training step (settings: the ``single`` section of params.yaml)."""

    supervision: str = "scribble"
    loss: str = "dfr"
    crf_weight: float = 2.0
    crf_scale: float = 0.25
    sigma_rgb: float = 15.0
    sigma_xy: float = 100.0
    warmup_steps: int = 0
    sigma_deep: float = 0.5
    fc_weight: float = 1.0
    fc_pixels: int = 256
    fc_confidence: float | None = None
    deep_warmup_steps: int = 50
    cls_weight: float = 1.0
    seed_fg: float = 0.55
    seed_bg: float = 0.35

    def __post_init__(self):
        if self.supervision not in SUPERVISIONS:
            raise ConfigError(f"single.supervision: must be one of {', '.join(SUPERVISIONS)}, got {self.supervision!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"single.loss: must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        self.regulariser = DenseCRFLoss(self.crf_weight, self.sigma_rgb, self.sigma_xy, self.crf_scale)

    def __call__(self, model: SingleStageModel, images: torch.Tensor, labels: torch.Tensor, roi: torch.Tensor,
                 image_labels: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Loss terms (``loss`` = their weighted sum) for a batch: images (B, 3, H, W) in [0, 1], labels
        (B, H, W) (255 = unlabelled), roi (B, H, W) 1 inside the image, image_labels (B, C-1)."""
        out = model.forward_train(images)
        logits = out["logits"].float()
        terms: dict[str, torch.Tensor] = {}
        active = step >= self.warmup_steps
        if self.supervision == "image":
            scores = out["cams"].float().mean(dim=(2, 3))
            terms["cls"] = F.multilabel_soft_margin_loss(scores, image_labels)
            labels = cam_seeds(out["cams"], image_labels, images.shape[-2:], self.seed_fg, self.seed_bg)
            labels = labels.masked_fill(roi == 0, IGNORE_INDEX) if active else torch.full_like(labels, IGNORE_INDEX)
        # under torchrun: weighted by this rank's share of the labelled pixels (the single-process gradient)
        share = distributed.mean_share((labels != IGNORE_INDEX).sum())
        terms["pce"] = partial_cross_entropy(logits, labels) * share
        if self.loss in ("crf", "dfr") and active:
            extra = None
            if self.loss == "dfr" and step >= self.deep_warmup_steps:
                size = self.regulariser.loss_size(images.shape[-2:])
                extra = deep_features(out["embeddings"], size, self.sigma_deep)
            terms["crf"] = self.regulariser(images, logits.softmax(dim=1), roi, extra)
        if self.loss == "dfr":
            pairs = labels
            if self.fc_confidence is not None:
                confidence, predicted = logits.detach().softmax(dim=1).max(dim=1)
                extend = (labels == IGNORE_INDEX) & (confidence >= self.fc_confidence) & (roi > 0)
                pairs = torch.where(extend, predicted, labels)
            terms["fc"] = feature_consistency_loss(out["embeddings"], pairs, self.sigma_deep, self.fc_pixels)
        weights = {"cls": self.cls_weight, "fc": self.fc_weight}
        terms["loss"] = sum(weights.get(name, 1.0) * value for name, value in terms.items())
        return terms


class PartialLabelSamples(Dataset):
    """(image, labels, roi, image-level labels) for single-stage training: ``label_fn(id)`` gives the
    (H, W) labels (scribbles, GT, or all 255 with image labels only); the roi (1 inside the image, 0 on
    the crop's padding, rloss's "croppings") goes through the same geometric augmentation."""

    def __init__(self, dataset, ids: Sequence[str], label_fn: Callable[[str], np.ndarray],
                 image_labels: dict[str, list[int]], transform):
        self.dataset, self.ids, self.label_fn, self.transform = dataset, list(ids), label_fn, transform
        self.targets = np.zeros((len(self.ids), dataset.num_classes - 1), dtype=np.float32)
        for row, image_id in enumerate(self.ids):
            for cls in image_labels.get(image_id, []):
                self.targets[row, cls - 1] = 1.0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        image = self.dataset.load_image(image_id)
        labels = self.label_fn(image_id)
        if labels.shape != image.shape[:2]:
            raise DataError(f"labels of {image_id}: size {labels.shape} differs from its image {image.shape[:2]}")
        roi = np.ones(image.shape[:2], dtype=np.uint8)
        tv_image, tv_labels, tv_roi = self.transform(*as_tv(image, labels, roi))
        return tv_image, tv_labels.long(), (tv_roi == 1).float(), torch.from_numpy(self.targets[index])


def train_single_stage(model: SingleStageModel, objective: SingleStageLoss, loader: Iterable, max_steps: int,
                       lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, head_lr_mult: float = 10.0,
                       device: str | torch.device = "cpu", amp: bool = True, hooks: Sequence[Hook] = (),
                       resume_path: Path | None = None, resume_every: int = 0,
                       resume_key: str = "") -> list[dict[str, float]]:
    """DeepLab's training (:func:`pipeline.segmentation.training.train_segmentation`: the poly schedule, AMP on
    CUDA, resumable, DDP under torchrun) over batches of :class:`PartialLabelSamples` with ``objective``
    as the step's loss; returns every step's loss terms, ``lr`` and ``seconds``."""

    def step_fn(net, images, labels, roi, image_labels, step):
        return objective(net, images, labels, roi, image_labels, step)

    return train_segmentation(model, loader, max_steps, lr, momentum, weight_decay, head_lr_mult, device, amp,
                              hooks, resume_path, resume_every, resume_key, step_fn=step_fn,
                              name="train_single", lr_param="single.lr", timed=True)
