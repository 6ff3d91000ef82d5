"""Vision-transformer backbones from torchvision, the family DFR (Zhang et al. 2021) trains with:

- Swin-T (Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows", ICCV
  2021): four stages of shifted-window attention at strides 4/8/16/32 (96/192/384/768 channels).
  Output stride 32 is native; at output stride 16 the last stage's map is bilinearly upsampled to the
  stride-16 grid (departure: the pretrained stage cannot be dilated like a convolution).
- ViT-B/16 (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021): 12 blocks on 16x16
  patches; the stages are the token grids after blocks 3, 6, 9 and 12 (the last after the final layer
  norm), all at stride 16, 768 channels (as DPT / SETR tap ViT). The class token is kept through the
  blocks as in pre-training and dropped from the maps. Any input size: the image is resized to the
  nearest multiple of 16 and the 14x14 position embeddings are interpolated bicubically to the grid.

``pretrained: imagenet`` loads torchvision's IMAGENET1K_V1 weights (downloaded; offline it is the same
one-line error as ResNet's), or a local torchvision-layout state dict file.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import Swin_T_Weights, ViT_B_16_Weights, swin_t, vit_b_16

from pipeline.models.backbones.base import Backbone
from pipeline.models.backbones.resnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    download_state_dict,
    load_state_dict_file,
    load_state_dict_strict,
)


# torchvision's ImageNet weights of each transformer backbone (``pretrained: imagenet``)
IMAGENET_WEIGHTS = {"swin_t": Swin_T_Weights.IMAGENET1K_V1, "vit_b_16": ViT_B_16_Weights.IMAGENET1K_V1}


def _load_weights(net: nn.Module, name: str, url: str, pretrained: str | Path | None) -> None:
    if pretrained == "imagenet":
        load_state_dict_strict(net, download_state_dict(name, url), url)
    elif pretrained not in (None, "none"):
        load_state_dict_file(net, pretrained)


class _ImageNetNormalized(Backbone):
    def _register_normalization(self) -> None:
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class SwinTBackbone(_ImageNetNormalized):
    """torchvision Swin-T without its classifier: stage maps (NCHW) at strides 4, 8, 16, output_stride."""

    def __init__(self, output_stride: int = 16, pretrained: str | Path | None = None):
        super().__init__()
        self.check_output_stride("swin_t", output_stride)
        net = swin_t(weights=None)
        _load_weights(net, "swin_t", IMAGENET_WEIGHTS["swin_t"].url, pretrained)
        self.stages = nn.ModuleList([net.features[0:2], net.features[2:4], net.features[4:6], net.features[6:8]])
        self.stage_channels = (96, 192, 384, 768)
        self.stage_strides = (4, 8, 16, output_stride)
        self.output_stride = output_stride
        self._register_normalization()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.normalize(images)
        features = []
        for stage in self.stages:
            x = stage(x)  # the first stage's patch embedding takes NCHW; every stage returns NHWC
            features.append(x.permute(0, 3, 1, 2))
        if self.output_stride == 16:
            features[-1] = F.interpolate(features[-1], size=features[-2].shape[-2:], mode="bilinear",
                                         align_corners=False)
        return features


class ViTB16Backbone(_ImageNetNormalized):
    """torchvision ViT-B/16 without its classifier: token maps after blocks 3, 6, 9, 12 at stride 16."""

    taps = (2, 5, 8, 11)

    def __init__(self, output_stride: int = 16, pretrained: str | Path | None = None):
        super().__init__()
        self.check_output_stride("vit_b_16", output_stride)
        net = vit_b_16(weights=None)
        _load_weights(net, "vit_b_16", IMAGENET_WEIGHTS["vit_b_16"].url, pretrained)
        self.patch_size = net.patch_size
        self.conv_proj, self.class_token = net.conv_proj, net.class_token
        self.pos_embedding, self.dropout = net.encoder.pos_embedding, net.encoder.dropout
        self.blocks, self.norm = net.encoder.layers, net.encoder.ln
        self.stage_channels = (net.hidden_dim,) * 4
        self.stage_strides = (16,) * 4
        self.output_stride = 16
        self._register_normalization()

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        cls_pos, patch_pos = self.pos_embedding[:, :1], self.pos_embedding[:, 1:]
        side = int(round(patch_pos.shape[1] ** 0.5))
        if (side, side) != grid:
            patch_pos = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
            patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
            patch_pos = patch_pos.permute(0, 2, 3, 1).flatten(1, 2)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        p = self.patch_size
        size = tuple(max(p, round(s / p) * p) for s in images.shape[-2:])
        x = self.normalize(images)
        if size != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        grid = (size[0] // p, size[1] // p)
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_token.expand(len(tokens), -1, -1), tokens], dim=1)
        tokens = self.dropout(tokens + self.position_embedding(grid))
        features = []
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index in self.taps:
                out = self.norm(tokens) if index == len(self.blocks) - 1 else tokens
                features.append(out[:, 1:].transpose(1, 2).reshape(len(out), -1, *grid))
        return features
