"""Training of the segmentation model on pseudo masks (its inference: :mod:`pipeline.segmentation.inference`).

Training follows DeepLab (Chen et al., TPAMI 2017, sec. 4): SGD with momentum, the "poly" learning rate
lr * (1 - step / max_steps)^0.9, pixel-wise cross entropy ignoring label 255, the head at 10x the backbone
learning rate (SEAM's setting: lr 1e-3, wd 5e-4, 20k steps). Augmentation as in the DeepLab references
(IRN's deeplab-pytorch, SEAM's segmentation codebase): each image is rescaled by a random factor of ITS OWN
size, flipped, and randomly cropped, padding the mask with 255 (:func:`segmentation_train_transform`).

Departures from the references, and why:
- Augmentation: none. ``train_seg.scale_reference`` defaults to ``image`` (the references'
  rescale of the image itself); ``crop``, the project's former default (the classification stages' jitter:
  the image fitted into ``crop_size * s``), shows MSRC images at 0.25-0.75 of their size (eval reads them
  at 0.5-1.5) with much of each crop padding (measured: benchmarks/README.md, DeepLab); at 1,200 steps on ground truth ``image`` scores higher
  (benchmarks/README.md, DeepLab).
- The image is padded with 0 (black), not the ImageNet mean, because the backbones normalise internally.
- None in the optimisation: ``train_seg.lr: auto`` is SEAM's 1e-3 (head 1e-2) and the backbone's batch
  norms stay at their pretrained statistics (``train_seg.freeze_backbone_bn: auto``), as DeepLab-v2 and
  IRN's deeplab-pytorch at small batches. Only on the generated demo data, where those batch norms train,
  ``auto`` is 1e-2 (1e-3 learns too slowly there: benchmarks/README.md, the demo sections). On MSRC
  (1,200 steps, batch 8) that pair beats the former 0.01 with
  trained batch norms, and either change alone loses (frozen at 0.01 does not train; benchmarks/README.md,
  DeepLab).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.transforms import train_transform
from pipeline.engine import distributed
from pipeline.engine.trainer import Hook, train
from pipeline.errors import ConfigError, DataError

IGNORE_INDEX = 255


class RandomScale:
    """Resize an image and its masks by one factor drawn uniformly from [scale_min, scale_max] times the
    image's own size (bilinear for the image, nearest for the masks): DeepLab's random-scale augmentation."""

    def __init__(self, scale_min: float, scale_max: float):
        if not 0 < scale_min <= scale_max:
            raise ConfigError(f"train_seg.scale_min/scale_max: need 0 < scale_min <= scale_max, got "
                              f"{scale_min}, {scale_max}")
        self.scale_min, self.scale_max = scale_min, scale_max

    def __call__(self, image, *masks):
        """``image`` a ``tv_tensors.Image``, ``masks`` ``tv_tensors.Mask``s."""
        from torchvision.transforms import v2  # imported on use: pipeline.data.transforms says why

        scale = self.scale_min + (self.scale_max - self.scale_min) * float(torch.rand(()))
        height, width = image.shape[-2:]
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        return (v2.functional.resize(image, size, antialias=True),
                *(v2.functional.resize(mask, size) for mask in masks))


def segmentation_train_transform(crop_size: int, scale_min: float, scale_max: float, color_jitter: float = 0.0,
                                 scale_reference: str = "image"):
    """Random scale, horizontal flip, optional colour jitter, random ``crop_size`` crop (image padded with 0,
    mask with 255), image to float in [0, 1]. ``scale_reference``: "image" scales each image by a factor of
    its own size (DeepLab); "crop" fits it into ``crop_size * factor`` (the classification stages' jitter).
    Returns a ``torchvision.transforms.v2.Compose``."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    if scale_reference == "crop":
        return train_transform(crop_size, scale_min, scale_max, color_jitter)
    if scale_reference != "image":
        raise ConfigError(f"train_seg.scale_reference: must be image or crop, got {scale_reference!r}")
    steps = [RandomScale(scale_min, scale_max), v2.RandomHorizontalFlip()]
    if color_jitter > 0:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter, color_jitter / 3))
    steps += [
        v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
    ]
    return v2.Compose(steps)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross entropy over the pixels whose label is not ``ignore_index``.

    ``logits`` (B, C, h, w) are resized bilinearly to the (B, H, W) ``target`` if their size differs. A batch
    with no labelled pixel gives a zero loss that still back-propagates (zero gradients).
    """
    if logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0]:
        raise DataError(f"segmentation_loss: logits (B, C, h, w) and target (B, H, W) expected, got "
                        f"{tuple(logits.shape)} and {tuple(target.shape)}")
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    target = target.long()
    valid = target != ignore_index
    if target.device.type == "cpu":  # on CUDA this check would stall every step on a host sync; the masks
        # were checked where they were read (VOCDataset, the crf stage's output)
        if bool((valid & ((target < 0) | (target >= logits.shape[1]))).any()):
            labels = target[valid]
            raise DataError(f"segmentation_loss: mask values must lie in [0, {logits.shape[1]}) or be "
                            f"{ignore_index}, got {int(labels.min())}..{int(labels.max())}")
    # the mean over the labelled pixels without asking the host how many there are (0: a zero loss)
    total = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    return total / valid.sum().clamp(min=1)


def _segmentation_step(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, *_, step: int) -> dict:
    # under torchrun each rank's mean is weighted by its share of the labelled pixels, so that the averaged
    # gradient is the one of the mean over the whole (global) batch, as in a single process
    loss = segmentation_loss(model(images).float(), masks)
    return {"loss": loss * distributed.mean_share((masks != IGNORE_INDEX).sum())}


def train_segmentation(model: nn.Module, loader: Iterable, max_steps: int, lr: float, momentum: float = 0.9,
                       weight_decay: float = 5e-4, head_lr_mult: float = 10.0, device: str | torch.device = "cpu",
                       amp: bool = True, hooks: Sequence[Hook] = (), resume_path: Path | None = None,
                       resume_every: int = 0, resume_key: str = "", step_fn: Callable = None, name: str = "train_seg",
                       lr_param: str = "train_seg.lr", timed: bool = False) -> list[dict[str, float]]:
    """Train ``model`` (with ``param_groups(lr, head_lr_mult)``) for ``max_steps`` SGD steps on the one loop
    (:func:`pipeline.engine.trainer.train`: poly schedule, AMP on CUDA, resumable, DDP under torchrun);
    return every step's record (loss terms, the backbone ``lr``, what the ``hooks`` added).

    ``loader`` yields (images (B, 3, H, W) in [0, 1], masks (B, H, W) long with 255 = ignore) and is
    iterated as often as needed; ``step_fn`` (default: cross entropy on the masks) may take other batches
    and return other loss terms: the single stage (:mod:`pipeline.segmentation.single_stage`) trains here with its own.
    """
    return train(model, step_fn or _segmentation_step, loader, max_steps, lr, name=name, lr_param=lr_param,
                 momentum=momentum, weight_decay=weight_decay, head_lr_mult=head_lr_mult, device=device, amp=amp,
                 hooks=hooks, resume_path=resume_path, resume_every=resume_every, resume_key=resume_key, timed=timed)
