"""ResNet-38, the wide residual network "model A1" of Wu, Shen & van den Hengel ("Wider or Deeper:
Revisiting the ResNet Model for Visual Recognition", Pattern Recognition 2019), in the dilated output-stride-8
form used by PSA (Ahn & Kwak, CVPR 2018) and SEAM (Wang et al., CVPR 2020).

Pre-activation blocks (BN-ReLU before each conv; the shortcut projection also takes the BN-ReLU input):
conv1a 3x3 64 -> b2: 3 blocks 128 (stride 2) -> b3: 3 x 256 (stride 2) -> b4: 6 x 512 (stride 2)
-> b5: 3 x (512 -> 1024), dilation 2 -> b6: bottleneck 512/1024/2048, dilation 4 -> b7: bottleneck
1024/2048/4096, dilation 4 -> BN-ReLU. Output stride 8 (or 16: b5 keeps its stride 2 and the dilations
halve). Parameter names follow PSA's converted weights (``b4_3.conv_branch2a.weight``, ``bn7.running_mean``
...), so the widely used converted ImageNet file loads strictly. There is no download: weights come only
from a user-given file.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError
from pipeline.models.backbones.base import Backbone
from pipeline.models.backbones.resnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_state_dict_file,
)


class PreActBlock(nn.Module):
    """Two 3x3 convs (in -> mid -> out); the first may be strided / use ``first_dilation``.

    ``forward`` returns the block output and the BN-ReLU of its input (the feature PSA/SEAM tap)."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, stride: int = 1, first_dilation: int = 1,
                 dilation: int = 1):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid_ch, 3, stride, padding=first_dilation, dilation=first_dilation,
                                       bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        self.same_shape = in_ch == out_ch and stride == 1
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_bn_relu = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(x_bn_relu)
        y = self.conv_branch2a(x_bn_relu)
        y = self.conv_branch2b1(F.relu(self.bn_branch2b1(y)))
        return shortcut + y, x_bn_relu


class PreActBottleneck(nn.Module):
    """1x1 (out/4) -> 3x3 dilated (out/2) -> 1x1 (out) with channel dropout before the last two convs."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, out_ch // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_ch // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(out_ch // 4, out_ch // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(out_ch // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_ch // 2, out_ch, 1, bias=False)
        self.same_shape = in_ch == out_ch and stride == 1
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_bn_relu = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(x_bn_relu)
        y = self.conv_branch2a(x_bn_relu)
        y = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(y))))
        y = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(y))))
        return shortcut + y, x_bn_relu


class ResNet38Backbone(Backbone):
    """ResNet-38 (model A1) features: the BN-ReLU outputs of b3 (256 ch, stride 4), b4 (512, 8), b5 (1024,
    ``output_stride``) and the final BN-ReLU after b7 (4096, ``output_stride``) - PSA/SEAM's conv3..conv6.

    ``pretrained``: None / "none" or a path to converted ResNet-38 weights (strict load)."""

    def __init__(self, output_stride: int = 8, pretrained: str | Path | None = None):
        super().__init__()
        self.check_output_stride("resnet38", output_stride)
        if pretrained == "imagenet":
            raise ConfigError(
                "backbone.pretrained: resnet38 has no downloadable imagenet weights; give the path of the "
                "converted ResNet-38 weights file (e.g. PSA/SEAM's ilsvrc-cls_rna-a1_cls1000_ep-0001 as .pth)"
            )
        b5_stride, d5, d6 = (1, 2, 4) if output_stride == 8 else (2, 1, 2)
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.b2 = PreActBlock(64, 128, 128, stride=2)
        self.b2_1 = PreActBlock(128, 128, 128)
        self.b2_2 = PreActBlock(128, 128, 128)
        self.b3 = PreActBlock(128, 256, 256, stride=2)
        self.b3_1 = PreActBlock(256, 256, 256)
        self.b3_2 = PreActBlock(256, 256, 256)
        self.b4 = PreActBlock(256, 512, 512, stride=2)
        for i in range(1, 6):
            setattr(self, f"b4_{i}", PreActBlock(512, 512, 512))
        self.b5 = PreActBlock(512, 512, 1024, stride=b5_stride, first_dilation=1, dilation=d5)
        self.b5_1 = PreActBlock(1024, 512, 1024, first_dilation=d5, dilation=d5)
        self.b5_2 = PreActBlock(1024, 512, 1024, first_dilation=d5, dilation=d5)
        self.b6 = PreActBottleneck(1024, 2048, dilation=d6, dropout=0.3)
        self.b7 = PreActBottleneck(2048, 4096, dilation=d6, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)
        self.stage_channels = (256, 512, 1024, 4096)
        self.stage_strides = (4, 8, output_stride, output_stride)
        self.output_stride = output_stride
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if pretrained not in (None, "none"):
            load_state_dict_file(self, pretrained)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_until(images, -1)[0]

    def _run(self, x: torch.Tensor, first: int, last: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Blocks of stages ``first..last``; a stage's tap is the BN-ReLU the next stage's first block takes."""
        taps = []
        for stage in range(first, last + 1):
            for j, name in enumerate(_STAGE_BLOCKS[stage]):
                x, x_bn_relu = getattr(self, name)(x)
                if j == 0 and stage > first:
                    taps.append(x_bn_relu)
        if last == len(_STAGE_BLOCKS) - 1:
            taps.append(F.relu(self.bn7(x)))
        else:  # the next block is not run here: its input BN-ReLU, without a second running-stats update
            taps.append(_bn_relu_no_update(getattr(self, _STAGE_BLOCKS[last + 1][0]).bn_branch2a, x))
        return taps, x

    def forward_until(self, images: torch.Tensor, level: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self._run(self.conv1a(self.normalize(images)), 0, self.check_level(level))

    def forward_from(self, state: torch.Tensor, level: int) -> list[torch.Tensor]:
        level = self.check_level(level)
        if level == len(_STAGE_BLOCKS) - 1:
            return []
        return self._run(state, level + 1, len(_STAGE_BLOCKS) - 1)[0]


# blocks of the four stages; stage i's feature is the BN-ReLU input of stage i+1's first block (b7: bn7)
_STAGE_BLOCKS = (
    ("b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2"),
    ("b4", "b4_1", "b4_2", "b4_3", "b4_4", "b4_5"),
    ("b5", "b5_1", "b5_2"),
    ("b6", "b7"),
)


def _bn_relu_no_update(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``relu(bn(x))`` as ``bn`` computes it in its current mode, leaving its running statistics alone."""
    use_batch_stats = bn.training or bn.running_mean is None
    return F.relu(
        F.batch_norm(
            x, None if use_batch_stats else bn.running_mean, None if use_batch_stats else bn.running_var,
            bn.weight, bn.bias, use_batch_stats, 0.0, bn.eps,
        )
    )
