"""Multi-scale + flip CAM read-out shared by every method (PSA/IRN inference protocol).

For each scale the image is resized, the method's raw CAM is computed for the image and its mirror,
the mirror's CAM is flipped back, ReLU is applied and the maps are resized to the image size and summed
over scales and flips. Each labelled class's map is then divided by its maximum, giving [0, 1].
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.methods.base import CamMethod


def normalize_cams(cams: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """ReLU, then divide each (.., H, W) map by its own maximum (an all-zero map stays zero)."""
    cams = F.relu(cams)
    peak = cams.flatten(-2).amax(-1)[..., None, None]
    return cams / (peak + eps)


@torch.no_grad()
def multiscale_cam(
    method: CamMethod,
    image: torch.Tensor,
    class_indices: Sequence[int],
    scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
    flip: bool = True,
) -> torch.Tensor:
    """CAMs in [0, 1] of shape (K, H, W) for the K foreground classes ``class_indices`` (0-based over
    the method's foreground classes) of one image (3, H, W) in [0, 1]. K = 0 returns an empty tensor."""
    height, width = image.shape[-2:]
    class_indices = torch.as_tensor(list(class_indices), dtype=torch.long, device=image.device)
    if class_indices.numel() == 0:
        return image.new_zeros((0, height, width))
    total = image.new_zeros((len(class_indices), height, width))
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
        batch = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        cams = method.cam(batch).float()[:, class_indices]
        cams = F.relu(cams)
        cams = F.interpolate(cams, size=(height, width), mode="bilinear", align_corners=False)
        total += cams[0]
        if flip:
            total += cams[1].flip(-1)
    return normalize_cams(total)


def labels_to_indices(labels: np.ndarray) -> np.ndarray:
    """0-based foreground class indices of a multi-hot label vector."""
    return np.flatnonzero(np.asarray(labels) > 0.5)
