"""Inference of a segmentation model: the softmax averaged over scales and horizontal flips at the input
resolution, optionally refined by the dense CRF (:func:`pipeline.pseudo_masks.crf.dense_crf`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.transforms import to_image_tensor as image_to_tensor
from pipeline.errors import ArgumentError, DataError
from pipeline.pseudo_masks.crf import dense_crf


@torch.no_grad()
def predict(model: nn.Module, image_tensor: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False,
            amp: bool = False) -> np.ndarray:
    """Class probabilities (C, H, W) float32 for one image (3, H, W) or (1, 3, H, W) in [0, 1].

    For each scale the image is resized bilinearly, the model's logits are resized back to (H, W) and
    softmaxed; with ``flip`` the mirrored image goes through in the same batch and is mirrored back. The
    result is the mean of all these distributions. The model runs in eval mode; its mode is restored.
    """
    if image_tensor.ndim == 3:
        image_tensor = image_tensor[None]
    if image_tensor.ndim != 4 or image_tensor.shape[:2] != (1, 3):
        raise DataError(f"predict: image must be (3, H, W) or (1, 3, H, W), got {tuple(image_tensor.shape)}")
    if not scales or any(s <= 0 for s in scales):
        raise ArgumentError("scales", f"must be a non-empty list of positive numbers, got {scales}")
    device = next(model.parameters()).device
    image = image_tensor.to(device, torch.float32)
    size = image.shape[-2:]
    was_training = model.training
    model.eval()
    total = None
    try:
        for scale in scales:
            scaled_size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
            x = image if scaled_size == tuple(size) else F.interpolate(
                image, size=scaled_size, mode="bilinear", align_corners=False)
            if flip:
                x = torch.cat([x, x.flip(-1)], dim=0)
            with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
                logits = model(x)
            logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
            if flip:
                logits = torch.cat([logits[:1], logits[1:].flip(-1)], dim=0)
            probs = logits.softmax(dim=1).sum(dim=0)
            total = probs if total is None else total + probs
    finally:
        model.train(was_training)
    return (total / (len(scales) * (2 if flip else 1))).cpu().numpy()


def predict_label_map(model: nn.Module, image: np.ndarray, scales: Sequence[float] = (1.0,), flip: bool = False,
                      use_crf: bool = False, crf_kwargs: dict | None = None, amp: bool = False) -> np.ndarray:
    """(H, W) uint8 label map for an (H, W, 3) uint8 image: :func:`predict`, optionally the dense CRF on
    the averaged probabilities, then argmax."""
    probs = predict(model, image_to_tensor(image), scales=scales, flip=flip, amp=amp)
    if use_crf:
        probs = dense_crf(image, probs, **(crf_kwargs or {}))
    return probs.argmax(axis=0).astype(np.uint8)
