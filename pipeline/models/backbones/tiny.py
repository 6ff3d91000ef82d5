"""A small, fast convolutional backbone for tests and laptop demos (no pretrained weights)."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.models.backbones.base import Backbone


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(Backbone):
    """Four stages of two 3x3 conv-BN-ReLU blocks, strides 2/4/8/16 (or 8 with the last stage dilated)."""

    def __init__(self, output_stride: int = 16, width: int = 16):
        super().__init__()
        self.check_output_stride("tiny", output_stride)
        w = width
        last_stride, last_dilation = (2, 1) if output_stride == 16 else (1, 2)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(_conv_bn_relu(3, w, 2), _conv_bn_relu(w, w, 1)),
                nn.Sequential(_conv_bn_relu(w, 2 * w, 2), _conv_bn_relu(2 * w, 2 * w, 1)),
                nn.Sequential(_conv_bn_relu(2 * w, 4 * w, 2), _conv_bn_relu(4 * w, 4 * w, 1)),
                nn.Sequential(
                    _conv_bn_relu(4 * w, 8 * w, last_stride, last_dilation),
                    _conv_bn_relu(8 * w, 8 * w, 1, last_dilation),
                ),
            ]
        )
        self.stage_channels = (w, 2 * w, 4 * w, 8 * w)
        self.stage_strides = (2, 4, 8, output_stride)
        self.output_stride = output_stride
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_until(images, -1)[0]

    def forward_until(self, images: torch.Tensor, level: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.normalize(images)
        features = []
        for stage in self.stages[: self.check_level(level) + 1]:
            x = stage(x)
            features.append(x)
        return features, x

    def forward_from(self, state: torch.Tensor, level: int) -> list[torch.Tensor]:
        x, features = state, []
        for stage in self.stages[self.check_level(level) + 1 :]:
            x = stage(x)
            features.append(x)
        return features
