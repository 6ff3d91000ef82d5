"""Operations on class activation maps shared by the CAM methods and the read-out: the two per-map
normalisers (divide by the maximum, as PSA/IRN; SEAM's min-max ``max_norm``), the background channel, the
per-pixel maximum, and the seed SEAM's and CPN's correlation modules refine."""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5


def normalize_cams(cams: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """ReLU, then divide each (.., H, W) map by its own maximum (an all-zero map stays zero): the max read-out,
    and ReCAM's class weights (:mod:`pipeline.cam.recam`)."""
    cams = F.relu(cams)
    peak = cams.flatten(-2).amax(-1)[..., None, None]
    return cams / (peak + eps)


def max_normalise(cams: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``ReLU(ReLU(x) - eps) / (max ReLU(x) + eps)`` per (image, channel) map: values in [0, 1). This is
    how SEAM's and CPN's ``Net.forward`` normalise the CAM they feed to PCM / PRCM (the seed)."""
    cams = F.relu(cams)
    return F.relu(cams - eps) / (cams.amax(dim=(2, 3), keepdim=True) + eps)


def minmax_normalise(cams: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """SEAM's ``max_norm`` (tool/visualization.py), which CPN's training reuses and SEAM's / CPN's
    inference reads out with (:func:`pipeline.cam.readout.multiscale_cam`): ReLU, then per (.., H, W) map
    ``ReLU(x - min - eps) / (max - min + eps)``: the minimum maps to 0, the maximum to ~1. A map's floor
    (a PCM output is a weighted average, so it rarely reaches 0) is removed. (The authors' inference leaves
    the floor values slightly negative; any threshold >= 0 treats both alike.)"""
    cams = F.relu(cams)
    low = cams.amin(dim=(-2, -1), keepdim=True)
    high = cams.amax(dim=(-2, -1), keepdim=True)
    return F.relu(cams - low - eps) / (high - low + eps)


def add_background(fg: torch.Tensor) -> torch.Tensor:
    """Prepend a background channel ``1 - max_c fg_c`` to normalised foreground CAMs (B, C, h, w)."""
    background = (1.0 - fg.amax(dim=1, keepdim=True)).clamp_min(0.0)
    return torch.cat([background, fg], dim=1)


def keep_max_only(cams: torch.Tensor) -> torch.Tensor:
    """Zero every channel that is not the per-pixel maximum (ties keep all; a negative maximum stays).
    On foreground CAMs before :func:`add_background` it is SEAM's ``max_onehot``; on all channels it is
    CPN's ``max_onehot``."""
    return cams * (cams >= cams.amax(dim=1, keepdim=True)).to(cams.dtype)


def correlation_seed(raw_cam: torch.Tensor) -> torch.Tensor:
    """The detached CAM that SEAM's PCM and CPN's modules refine, as both networks build it: max-normalised
    foreground of **every** class (no label mask, in training as in inference), background ``1 - max fg``
    first, then every foreground channel but the per-pixel maximal one zeroed: (B, C + 1, h, w)."""
    with torch.no_grad():
        fg = max_normalise(raw_cam.detach())
        background = (1.0 - fg.amax(dim=1, keepdim=True)).clamp_min(0.0)
        return torch.cat([background, keep_max_only(fg)], dim=1)
