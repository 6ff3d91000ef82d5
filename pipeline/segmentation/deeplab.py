"""DeepLab segmentation heads over any :class:`~pipeline.models.backbones.base.Backbone`.

- v2 (Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous Convolution,
  and Fully Connected CRFs", TPAMI 2017, sec. 3.3 / fig. 4 "ASPP-L"): four parallel 3x3 atrous convolutions
  that each predict class scores, at rates 6/12/18/24 for output stride 8; their outputs are summed.
- v3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", arXiv 1706.05587,
  sec. 3.3): ASPP with one 1x1 convolution and three 3x3 atrous convolutions (rates 6/12/18 at output
  stride 16, doubled to 12/24/36 at output stride 8), plus image-level features (global average pooling,
  1x1 conv, bilinear upsampling); 256 filters with batch normalisation each; the concatenation goes
  through a 1x1 projection (256, BN) before the final 1x1 classifier.

One ASPP implementation serves every backbone rather than torchvision's ``DeepLabHead``: torchvision's
head fixes the rates to 12/24/36 (output stride 8 only), adds an extra 3x3 layer the paper does not have,
and the project's backbones (tiny, EfficientNet-Lite, ResNet) come in at output stride 8 or 16.

``freeze_backbone_bn`` keeps the backbone's batch-norm layers at their pretrained statistics and affine
parameters during training, as DeepLab-v2 (and IRN's deeplab-pytorch) do when the batch is too small for
reliable batch statistics; the head's batch norms (trained from scratch) always train.

Atrous convolutions whose rate reaches past the feature map (rate 36 on a 12 x 12 map, as at 96-pixel crops
and output stride 8) read only zero padding with their outer taps; :class:`AtrousConv2d` skips those taps,
which gives the same output and gradients as the full convolution for a fraction of the work
(benchmarks/README.md, "issue 19, part 7").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ArgumentError, ConfigError
from pipeline.models.backbones.base import Backbone

HEADS = ("v2", "v3")


def aspp_rates(head: str, output_stride: int) -> tuple[int, ...]:
    """Atrous rates of the head at ``output_stride`` (same field of view in input pixels at os 8 and 16).

    v3: 6/12/18 at os 16, 12/24/36 at os 8 (paper sec. 3.3). v2: 6/12/18/24 at os 8 (the paper's setting);
    at os 16 the rates are halved (3/6/9/12) so the branches see the same image extent.
    """
    if output_stride not in (8, 16):
        raise ArgumentError("output_stride", f"DeepLab supports 8 or 16, got {output_stride}")
    if head == "v3":
        base = (6, 12, 18)
        return tuple(r * 16 // output_stride for r in base)
    if head == "v2":
        base = (6, 12, 18, 24)
        return tuple(r * 8 // output_stride for r in base)
    raise ArgumentError("head", f"must be one of {', '.join(HEADS)}, got {head!r}")


class AtrousConv2d(nn.Conv2d):
    """A 3x3 "same" atrous convolution (padding = dilation) that leaves out the kernel rows (columns) whose taps
    fall outside every input position: when the rate is at least the map's height (width), the top and
    bottom rows (left and right columns) only ever multiply padding zeros. Same parameters, output and
    gradients as :class:`torch.nn.Conv2d`; the dead taps get zero gradient either way."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int, bias: bool = True):
        super().__init__(in_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rate = self.dilation[0]
        rows_dead, cols_dead = rate >= x.shape[-2], rate >= x.shape[-1]
        if not (rows_dead or cols_dead):
            return super().forward(x)
        centre, every = slice(1, 2), slice(None)
        weight = self.weight[:, :, centre if rows_dead else every, centre if cols_dead else every]
        padding = (0 if rows_dead else rate, 0 if cols_dead else rate)
        return F.conv2d(x, weight, self.bias, padding=padding, dilation=rate)


def _conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    conv = (AtrousConv2d(in_ch, out_ch, dilation, bias=False) if kernel_size == 3 and dilation > 1
            else nn.Conv2d(in_ch, out_ch, kernel_size, padding=dilation * (kernel_size - 1) // 2, bias=False))
    return nn.Sequential(
        conv,
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ImagePooling(nn.Module):
    """v3's image-level branch: global average pooling, 1x1 conv + BN + ReLU, upsampled back."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = _conv_bn_relu(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            raise ArgumentError("batch_size", "DeepLab-v3 image pooling needs >= 2 images per "
                                "training batch (batch norm over a 1x1 map)")
        return F.interpolate(self.conv(self.pool(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPPv3(nn.Module):
    """DeepLab-v3 head: ASPP (1x1, three atrous 3x3, image pooling) -> 1x1 projection -> dropout -> classifier.

    Dropout 0.1 after the projection follows the authors' TensorFlow reference (keep_prob 0.9); the paper
    does not state it.
    """

    def __init__(self, in_ch: int, num_classes: int, rates: tuple[int, ...], channels: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        branches = [_conv_bn_relu(in_ch, channels, 1)]
        branches += [_conv_bn_relu(in_ch, channels, 3, dilation=rate) for rate in rates]
        branches.append(ImagePooling(in_ch, channels))
        self.branches = nn.ModuleList(branches)
        self.project = _conv_bn_relu(channels * len(branches), channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.classifier(self.dropout(self.project(x)))


class ASPPv2(nn.Module):
    """DeepLab-v2 ASPP-L: parallel 3x3 atrous classifiers, one per rate, whose score maps are summed.

    Each branch is a single 3x3 atrous convolution straight to class scores (the ResNet-101 variant of
    the paper's released model); weights initialised N(0, 0.01), biases 0, as in the authors' model.
    """

    def __init__(self, in_ch: int, num_classes: int, rates: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(
            AtrousConv2d(in_ch, num_classes, rate) for rate in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class SegmentationModel(nn.Module):
    """Backbone + DeepLab head. ``forward(images in [0, 1])`` -> logits (B, num_classes, H, W) upsampled
    bilinearly to the input size. ``num_classes`` includes background."""

    def __init__(self, backbone: Backbone, head: nn.Module, num_classes: int, head_name: str,
                 freeze_backbone_bn: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes
        self.head_name = head_name
        self.freeze_backbone_bn = freeze_backbone_bn
        if freeze_backbone_bn:
            for module in self._backbone_norms():
                for param in module.parameters():
                    param.requires_grad_(False)
        self.train(self.training)

    def _backbone_norms(self) -> list[nn.Module]:
        return [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> "SegmentationModel":
        """As ``nn.Module.train``, but frozen backbone batch norms stay in eval mode (running statistics)."""
        super().train(mode)
        if self.freeze_backbone_bn:
            for module in self._backbone_norms():
                module.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(images)[-1])
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def param_groups(self, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
        """Backbone at ``lr``, the head (trained from scratch) at ``lr * head_lr_mult``."""
        from pipeline.cam.methods.base import backbone_head_groups

        return backbone_head_groups(self.backbone, [self.head], lr, head_lr_mult)


def build_deeplab(backbone: Backbone, num_classes: int, head: str = "v3", dropout: float = 0.1,
                  channels: int = 256, freeze_backbone_bn: bool = False) -> SegmentationModel:
    """DeepLab over ``backbone`` (its last stage, at its output stride) predicting ``num_classes`` (incl.
    background). ``head``: "v3" (ASPP + image pooling) or "v2" (summed atrous classifiers).
    ``freeze_backbone_bn``: keep the backbone's batch norms at their pretrained state while training."""
    if num_classes < 2:
        raise ConfigError(f"num_classes: must be >= 2 (background + classes), got {num_classes}")
    rates = aspp_rates(head, backbone.output_stride)
    if head == "v3":
        module: nn.Module = ASPPv3(backbone.out_channels, num_classes, rates, channels, dropout)
    else:
        module = ASPPv2(backbone.out_channels, num_classes, rates)
    return SegmentationModel(backbone, module, num_classes, head, freeze_backbone_bn)
