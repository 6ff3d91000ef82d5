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

# the backbones: name -> (class, the arguments naming the variant), the one list of them
REGISTRY: dict[str, tuple[type[Backbone], tuple[str, ...]]] = {
    "tiny": (TinyBackbone, ()),
    "efficientnet_lite0": (EfficientNetLiteBackbone, ("efficientnet_lite0",)),
    "efficientnet_lite2": (EfficientNetLiteBackbone, ("efficientnet_lite2",)),
    "resnet50": (ResNetBackbone, ("resnet50",)),
    "resnet101": (ResNetBackbone, ("resnet101",)),
    "resnet38": (ResNet38Backbone, ()),
    "swin_t": (SwinTBackbone, ()),
    "vit_b_16": (ViTB16Backbone, ()),
}
BACKBONES = tuple(REGISTRY)
# output strides each backbone supports
OUTPUT_STRIDES = {name: cls.output_strides for name, (cls, _) in REGISTRY.items()}


def build_backbone(name: str, output_stride: int = 16, pretrained: str | Path | None = None) -> Backbone:
    """Build backbone ``name`` at ``output_stride``.

    ``pretrained``: ``None`` / ``"none"`` (random init), ``"imagenet"`` (the weights that go with the
    architecture), or a path to a local state-dict file (loaded strictly).
    """
    if name not in BACKBONES:
        raise ConfigError(f"backbone.name: unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    cls, variant = REGISTRY[name]
    cls.check_output_stride(name, output_stride)
    if pretrained == "none":
        pretrained = None
    if cls is TinyBackbone:
        if pretrained is not None:
            raise ConfigError("backbone.pretrained: the tiny backbone has no pretrained weights; use none")
        return TinyBackbone(output_stride=output_stride)
    return cls(*variant, output_stride=output_stride, pretrained=pretrained)


__all__ = [
    "Backbone",
    "BACKBONES",
    "EfficientNetLite",
    "EfficientNetLiteBackbone",
    "OUTPUT_STRIDES",
    "REGISTRY",
    "ResNet38Backbone",
    "ResNetBackbone",
    "SwinTBackbone",
    "TinyBackbone",
    "ViTB16Backbone",
    "build_backbone",
]
