"""Training augmentation with torchvision.transforms.v2: masks travel with their images.

Random rescale (scale jitter around the crop size), horizontal flip, colour jitter (image only) and a
random crop padded to ``crop_size`` (image padding 0, mask padding 255 = ignore).

The rescale is PSA's/SEAM's/CPN's ``RandomResizeLong`` expressed relative to the crop: the image's long
side becomes ``crop_size * s`` with ``s`` uniform in ``[scale_min, scale_max]`` (torchvision's
ScaleJitter on a square target), aspect ratio kept. Their 448..768 for crop 448 is ``(1.0, 1.71)``.

torchvision is imported where a transform is built, not with this module: importing it costs about two
seconds per process (it loads ``torch._dynamo``), which the stages that only read images do not need.
"""
from __future__ import annotations

import numpy as np
import torch


def train_transform(crop_size: int, scale_min: float, scale_max: float, color_jitter: float = 0.3):
    """The classification / propagation training augmentation, a ``torchvision.transforms.v2.Compose``."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    steps = [
        v2.ScaleJitter(target_size=(crop_size, crop_size), scale_range=(scale_min, scale_max), antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if color_jitter > 0:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter, color_jitter / 3))
    steps += [
        v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 255}),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
    ]
    return v2.Compose(steps)


def to_image_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def as_tv(image: np.ndarray, *masks: np.ndarray):
    """Wrap arrays as tv_tensors so v2 transforms treat images and masks correctly: the image alone, or
    (image, *masks) when masks are given."""
    from torchvision import tv_tensors

    img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    if not masks:
        return img
    return img, *(tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask))) for mask in masks)
