"""Backbones behind one interface (:class:`Backbone`), built by name with :func:`build_backbone`."""
from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.models.backbones.base import Backbone
from pipeline.models.backbones.efficientnet_lite import (
    EfficientNetLite,
    EfficientNetLiteBackbone,
)
from pipeline.models.backbones.resnet import ResNetBackbone
from pipeline.models.backbones.resnet38 import ResNet38Backbone
from pipeline.models.backbones.tiny import TinyBackbone
from pipeline.models.backbones.transformer import SwinTBackbone, ViTB16Backbone

BACKBONES = ("tiny", "efficientnet_lite0", "efficientnet_lite2", "resnet50", "resnet101", "resnet38", "swin_t",
             "vit_b_16")

# output strides each backbone supports
OUTPUT_STRIDES = {
    "tiny": (8, 16),
    "efficientnet_lite0": (8, 16, 32),
    "efficientnet_lite2": (8, 16, 32),
    "resnet50": (8, 16, 32),
    "resnet101": (8, 16, 32),
    "resnet38": (8, 16),
    "swin_t": (16, 32),
    "vit_b_16": (16,),
}


def build_backbone(name: str, output_stride: int = 16, pretrained: str | Path | None = None) -> Backbone:
    """Build backbone ``name`` at ``output_stride``.

    ``pretrained``: ``None`` / ``"none"`` (random init), ``"imagenet"`` (the weights that go with the
    architecture), or a path to a local state-dict file (loaded strictly).
    """
    if name not in BACKBONES:
        raise ConfigError(f"backbone.name: unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if output_stride not in OUTPUT_STRIDES[name]:
        allowed = ", ".join(str(s) for s in OUTPUT_STRIDES[name])
        raise ConfigError(f"backbone.output_stride: {name} supports {allowed}, got {output_stride!r}")
    if pretrained == "none":
        pretrained = None
    if name == "tiny":
        if pretrained is not None:
            raise ConfigError("backbone.pretrained: the tiny backbone has no pretrained weights; use none")
        return TinyBackbone(output_stride=output_stride)
    if name.startswith("efficientnet_lite"):
        return EfficientNetLiteBackbone(name, output_stride=output_stride, pretrained=pretrained)
    if name in ("resnet50", "resnet101"):
        return ResNetBackbone(name, output_stride=output_stride, pretrained=pretrained)
    if name == "swin_t":
        return SwinTBackbone(output_stride=output_stride, pretrained=pretrained)
    if name == "vit_b_16":
        return ViTB16Backbone(output_stride=output_stride, pretrained=pretrained)
    return ResNet38Backbone(output_stride=output_stride, pretrained=pretrained)


__all__ = [
    "Backbone",
    "BACKBONES",
    "EfficientNetLite",
    "EfficientNetLiteBackbone",
    "OUTPUT_STRIDES",
    "ResNet38Backbone",
    "ResNetBackbone",
    "SwinTBackbone",
    "TinyBackbone",
    "ViTB16Backbone",
    "build_backbone",
]
