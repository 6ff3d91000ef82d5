"""Multi-scale + flip CAM read-out shared by every method.

For each scale the image is resized, the method's raw CAM is computed for the image and its mirror,
the mirror's CAM is flipped back, ReLU is applied and the maps are resized to the image size and summed
over scales and flips. Each labelled class's map is then normalised to [0, 1] in one of two ways:

- ``"max"``: divided by its maximum, as PSA's and IRN's CAM inference (plain CAM and PPL use this);
- ``"minmax"``: ``(x - min) / (max - min)``, values at the minimum set to 0, as SEAM's ``infer_SEAM.py``
  and CPN's ``infer_cam.py``. A PCM/PRCM output is a weighted average of the seed, so it keeps a floor
  above zero that one global background threshold cannot remove; min-max removes it.

By default each method's own (``CamMethod.readout_norm``) is used. The references sum the raw maps and
clip at zero once; the per-scale ReLU here is the same for their refined maps, which are non-negative.
SEAM's and CPN's ``cam`` return their network's output at the scaled input's size (as the authors'
``Net.forward``); the resize to the image here is then the authors' ``align_corners=False`` upsampling of
infer_SEAM.py / infer_cam.py. Departures of this shared read-out from those scripts: each scaled image is
resized here bilinearly on the tensor (theirs: PIL bicubic), and CPN's final halving of the normalised
map is not done (a threshold t on theirs is 2t here).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.cam.maps import minmax_normalise, normalize_cams
from pipeline.cam.methods.base import CamMethod
from pipeline.errors import ConfigError

READOUT_NORMS = ("max", "minmax")


@torch.no_grad()
def multiscale_cam(
    method: CamMethod,
    image: torch.Tensor,
    class_indices: Sequence[int],
    scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
    flip: bool = True,
    normalize: str | None = None,
) -> torch.Tensor:
    """CAMs in [0, 1] of shape (K, H, W) for the K foreground classes ``class_indices`` (0-based over
    the method's foreground classes) of one image (3, H, W) in [0, 1]. K = 0 returns an empty tensor.
    ``normalize``: "max", "minmax", or None for the method's own ``readout_norm``."""
    normalize = normalize or getattr(method, "readout_norm", "max")
    if normalize not in READOUT_NORMS:
        raise ConfigError(f"cam.normalize: unknown {normalize!r}; choose one of auto, {', '.join(READOUT_NORMS)}")
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
    return minmax_normalise(total) if normalize == "minmax" else normalize_cams(total)


def labels_to_indices(labels: np.ndarray) -> np.ndarray:
    """0-based foreground class indices of a multi-hot label vector."""
    return np.flatnonzero(np.asarray(labels) > 0.5)
