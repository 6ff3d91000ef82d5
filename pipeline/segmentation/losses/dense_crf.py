"""The dense-CRF loss of Tang et al., "On Regularized Losses for Weakly-supervised CNN Segmentation"
(ECCV 2018, eq. 7): for the softmax S (K classes) over all pixels,

    L_crf(S) = sum_k S_k^T W (1 - S_k),   W_ij = exp(-|I_i - I_j|^2 / 2 sigma_rgb^2 - |p_i - p_j|^2 / 2 sigma_xy^2)

a relaxed Potts energy that is low when pixels of similar colour nearby take the same class. Its gradient
is dL/dS_k = W (1 - 2 S_k) (W symmetric), so one product W [S, 1] gives value and gradient.

How the authors' PyTorch code (meng-tang/rloss, ``DenseCRFLoss.py``) computes it, and what is kept:
- image (0..255 RGB) downscaled by nearest neighbour, the softmax bilinearly, by ``scale`` (0.5), and
  sigma_xy scaled with it; the crop's padding is masked out of S (the "ROI"). Kept.
- W comes from a permutohedral-lattice bilateral filter (compiled C++, an approximation of the Gaussian,
  centre pixel included). Departure: here W is the exact Gaussian (W_ii = 1 included), evaluated densely
  in row blocks at the reduced resolution in pure PyTorch (CPU and CUDA, no extension), never stored
  whole: memory O(block * P), time O(P^2 K); tests check value and gradient against the full N x N
  matrix. Because of the P^2 cost the project's default scale is 0.25 (``single.crf_scale``; rloss 0.5):
  at crop 160 that is a 40 x 40 grid, still 4x finer than the logits at output stride 16, and the loss
  costs a CPU training step far less than at 0.5 (benchmarks/README.md, "Single-stage branch on MSRC": the
  step cost of benchmarks/single_step_cost.py; on a GPU either is cheap).
- Departure: their loss is -sum_k S_k^T W S_k, which differs from the formula above by the constant
  m^T W m (m the ROI); the formula is used so that the value is >= 0 and 0 for a segmentation that never
  separates similar pixels. Gradients are identical.
- Departure: normalisation. They sum over pixel pairs and divide by the batch size, with weight 2e-9 for
  513 crops at scale 0.5 (P ~ 257^2). A sum over pairs grows as P^2, so that weight only fits one crop
  size; here the sum is divided by P^2 as well, and the weight 2e-9 * 257^4 ~ 8.7 is its equivalent.

The kernel features are a plain (B, P, D) tensor scaled by the sigmas (``gaussian_features``), so DFR's
dynamic kernel (:mod:`pipeline.segmentation.losses.dfr`) is the same loss with deep feature columns appended.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError, DataError

# elements of one (B, rows, P) kernel block: 16 MB in float32
DEFAULT_BLOCK_ELEMENTS = 1 << 22
# floor of the kernel's exponent: exp(-80) ~ 1.8e-35 is still a normal float32
MAX_EXPONENT = 80.0


def gaussian_features(images: torch.Tensor, sigma_rgb: float, sigma_xy: float) -> torch.Tensor:
    """(B, P, 5) kernel features [R, G, B] * 255 / sigma_rgb, [y, x] / sigma_xy of images (B, 3, h, w) in
    [0, 1], pixels in row-major order: the half squared distance of two rows is the kernel's exponent."""
    if sigma_rgb <= 0 or sigma_xy <= 0:
        raise ConfigError(f"dense-CRF loss: sigma_rgb and sigma_xy must be > 0, got {sigma_rgb}, {sigma_xy}")
    b, _, h, w = images.shape
    rgb = images.float().flatten(2).transpose(1, 2) * (255.0 / sigma_rgb)
    ys, xs = torch.meshgrid(torch.arange(h, device=images.device, dtype=torch.float32),
                            torch.arange(w, device=images.device, dtype=torch.float32), indexing="ij")
    xy = torch.stack([ys.flatten(), xs.flatten()], dim=1) / sigma_xy
    return torch.cat([rgb, xy.expand(b, -1, -1)], dim=2)


def kernel_matrix(features: torch.Tensor) -> torch.Tensor:
    """The dense (B, P, P) Gaussian kernel exp(-|f_i - f_j|^2 / 2). For reference and tests only: the
    loss never builds it."""
    return torch.exp(-0.5 * (features[:, :, None] - features[:, None]).square().sum(-1))


def _kernel_product(features: torch.Tensor, values: torch.Tensor, block_elements: int) -> torch.Tensor:
    """W @ values for W = kernel_matrix(features), features (B, P, D), values (B, P, C), row block by row
    block. One matrix product per block gives the exponent: [f_i, -|f_i|^2 / 2, 1] . [f_j, 1, -|f_j|^2 / 2]
    = -|f_i - f_j|^2 / 2. The exponent is floored at -MAX_EXPONENT so that exp never returns a denormal
    float (which slows CPU matrix products 10x); the entries it lifts are below 2e-35."""
    b, p, _ = features.shape
    half_norms = -0.5 * features.square().sum(-1, keepdim=True)
    ones = torch.ones_like(half_norms)
    rows_side = torch.cat([features, half_norms, ones], dim=2)
    cols_side = torch.cat([features, ones, half_norms], dim=2).transpose(1, 2).contiguous()
    rows = max(1, block_elements // max(b * p, 1))
    out = torch.empty_like(values)
    for start in range(0, p, rows):
        exponent = torch.bmm(rows_side[:, start : start + rows], cols_side)
        out[:, start : start + rows] = torch.bmm(exponent.clamp_(-MAX_EXPONENT, 0.0).exp_(), values)
    return out


class _DenseCRFEnergy(torch.autograd.Function):
    """Per-image sum_k (m S_k)^T W (m - m S_k) and its gradient m (W m - 2 W (m S_k))."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, roi: torch.Tensor, features: torch.Tensor, block_elements: int):
        masked = probs * roi[:, None]
        stacked = torch.cat([masked, roi[:, None]], dim=1).transpose(1, 2)          # (B, P, K + 1)
        product = _kernel_product(features, stacked.contiguous(), block_elements)   # W [mS, m]
        w_s, w_m = product[..., :-1].transpose(1, 2), product[..., -1]              # (B, K, P), (B, P)
        energy = (masked * (w_m[:, None] - w_s)).sum(dim=(1, 2))
        ctx.save_for_backward(roi, w_s, w_m)
        return energy

    @staticmethod
    def backward(ctx, grad_energy: torch.Tensor):
        roi, w_s, w_m = ctx.saved_tensors
        grad = (w_m[:, None] - 2.0 * w_s) * roi[:, None] * grad_energy[:, None, None]
        return grad, None, None, None


def dense_crf_loss(probs: torch.Tensor, features: torch.Tensor, roi: torch.Tensor | None = None,
                   block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """(B,) sum_k S_k^T W (1 - S_k) / P^2 for softmax ``probs`` (B, K, P), kernel ``features`` (B, P, D)
    (W = exp(-|f_i - f_j|^2 / 2), taken as constant) and ``roi`` (B, P) in {0, 1} (default all 1)."""
    if probs.ndim != 3 or features.ndim != 3 or features.shape[:2] != (probs.shape[0], probs.shape[2]):
        raise DataError(f"dense_crf_loss: probs (B, K, P) and features (B, P, D) expected, got "
                        f"{tuple(probs.shape)} and {tuple(features.shape)}")
    if roi is None:
        roi = probs.new_ones(probs.shape[0], probs.shape[2])
    with torch.autocast(device_type=probs.device.type, enabled=False):  # the kernel needs float32
        energy = _DenseCRFEnergy.apply(probs.float(), roi.float(), features.detach().float(), block_elements)
    return energy / float(probs.shape[2]) ** 2


def _scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


class DenseCRFLoss(nn.Module):
    """``weight * mean_b L_crf(S_b) / P^2`` at ``scale`` of the input resolution (rloss's layer).

    ``forward(images (B, 3, H, W) in [0, 1], probs (B, K, H, W) softmax, roi (B, H, W) 1 inside the
    image / 0 on crop padding, extra_features (B, P, E) optional)``: extra features (already divided by
    their sigma, at the loss resolution ``loss_size``) are appended to the RGB/XY features: DFR's kernel.
    """

    def __init__(self, weight: float, sigma_rgb: float = 15.0, sigma_xy: float = 100.0, scale: float = 0.5,
                 block_elements: int = DEFAULT_BLOCK_ELEMENTS):
        super().__init__()
        if weight < 0 or not 0 < scale <= 1:
            raise ConfigError(f"dense-CRF loss: weight must be >= 0 and scale in (0, 1], got {weight}, {scale}")
        self.weight, self.sigma_rgb, self.sigma_xy, self.scale = weight, sigma_rgb, sigma_xy, scale
        self.block_elements = block_elements

    def loss_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return _scaled_size(tuple(size), self.scale)

    def forward(self, images: torch.Tensor, probs: torch.Tensor, roi: torch.Tensor | None = None,
                extra_features: torch.Tensor | None = None) -> torch.Tensor:
        size = self.loss_size(images.shape[-2:])
        if roi is None:
            roi = images.new_ones(images.shape[0], *images.shape[-2:])
        if size != tuple(images.shape[-2:]):
            images = F.interpolate(images.float(), size=size, mode="nearest")
            probs = F.interpolate(probs.float(), size=size, mode="bilinear", align_corners=False)
            roi = F.interpolate(roi[:, None].float(), size=size, mode="nearest")[:, 0]
        features = gaussian_features(images, self.sigma_rgb, self.sigma_xy * self.scale)
        if extra_features is not None:
            features = torch.cat([features, extra_features.float()], dim=2)
        energy = dense_crf_loss(probs.flatten(2), features, roi.flatten(1), self.block_elements)
        return self.weight * energy.mean()

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, "
                f"scale={self.scale}")
