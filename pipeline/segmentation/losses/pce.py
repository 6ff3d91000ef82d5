"""Partial cross entropy (Tang et al., "On Regularized Losses for Weakly-supervised CNN Segmentation",
ECCV 2018, eq. 2): the cross entropy of the labelled pixels only (scribbles or confident seeds); every
pixel labelled 255 is left out of the loss and of the mean."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.errors import DataError

IGNORE_INDEX = 255


def partial_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                          ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross entropy of ``logits`` (B, C, H, W) over the pixels of ``target`` (B, H, W) that are not
    ``ignore_index``; 0 (still differentiable) when no pixel is labelled."""
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[-2:]):
        raise DataError(f"partial_cross_entropy: logits (B, C, H, W) and target (B, H, W) of the same size "
                        f"expected, got {tuple(logits.shape)} and {tuple(target.shape)}")
    target = target.long()
    valid = target != ignore_index
    if target.device.type == "cpu":  # on CUDA this check would stall every step on a host sync; the
        # scribbles were checked where they were read (stages/scribbles.py)
        if bool((valid & ((target < 0) | (target >= logits.shape[1]))).any()):
            labels = target[valid]
            raise DataError(f"partial_cross_entropy: labels must lie in [0, {logits.shape[1]}) or be "
                            f"{ignore_index}, got {int(labels.min())}..{int(labels.max())}")
    total = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    return total / valid.sum().clamp(min=1)  # the mean over labelled pixels, no host sync (0 if none)
