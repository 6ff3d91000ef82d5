"""Backbones behind one interface (:class:`~pipeline.models.backbones.base.Backbone`), built by name with
:func:`build_backbone`. :data:`REGISTRY` is the one list of them: the backbone's class (its module, and torch,
imported when one is built), the arguments naming its variant and the output strides it supports (params
validation reads them without importing torch)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from pipeline.errors import ConfigError
from pipeline.models.lazy_registry import resolve


class BackboneEntry(NamedTuple):
    cls: str  # "module:Class"
    variant: tuple[str, ...]  # the class's arguments naming the variant
    output_strides: tuple[int, ...]  # the output strides the architecture supports


_EFFICIENTNET, _RESNET = "pipeline.models.backbones.efficientnet_lite:EfficientNetLiteBackbone", \
    "pipeline.models.backbones.resnet:ResNetBackbone"
REGISTRY: dict[str, BackboneEntry] = {
    "tiny": BackboneEntry("pipeline.models.backbones.tiny:TinyBackbone", (), (8, 16)),
    "efficientnet_lite0": BackboneEntry(_EFFICIENTNET, ("efficientnet_lite0",), (8, 16, 32)),
    "efficientnet_lite2": BackboneEntry(_EFFICIENTNET, ("efficientnet_lite2",), (8, 16, 32)),
    "resnet50": BackboneEntry(_RESNET, ("resnet50",), (8, 16, 32)),
    "resnet101": BackboneEntry(_RESNET, ("resnet101",), (8, 16, 32)),
    "resnet38": BackboneEntry("pipeline.models.backbones.resnet38:ResNet38Backbone", (), (8, 16)),
    "swin_t": BackboneEntry("pipeline.models.backbones.transformer:SwinTBackbone", (), (16, 32)),
    "vit_b_16": BackboneEntry("pipeline.models.backbones.transformer:ViTB16Backbone", (), (16,)),
}
BACKBONES = tuple(REGISTRY)
# output strides each backbone supports
OUTPUT_STRIDES = {name: entry.output_strides for name, entry in REGISTRY.items()}


def build_backbone(name: str, output_stride: int = 16, pretrained: str | Path | None = None):
    """Build backbone ``name`` at ``output_stride``.

    ``pretrained``: ``None`` / ``"none"`` (random init), ``"imagenet"`` (the weights that go with the
    architecture), or a path to a local state-dict file (loaded strictly).
    """
    if name not in BACKBONES:
        raise ConfigError(f"backbone.name: unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    entry = REGISTRY[name]
    cls = resolve(entry.cls)
    cls.check_output_stride(name, output_stride)
    if pretrained == "none":
        pretrained = None
    if name == "tiny":
        if pretrained is not None:
            raise ConfigError("backbone.pretrained: the tiny backbone has no pretrained weights; use none")
        return cls(output_stride=output_stride)
    return cls(*entry.variant, output_stride=output_stride, pretrained=pretrained)


def import_backbones() -> None:
    """Import every backbone's class (torch): a stage that builds networks in forked worker processes calls it
    first, so that its workers inherit them instead of each importing them again."""
    for entry in REGISTRY.values():
        resolve(entry.cls)


__all__ = ["BACKBONES", "BackboneEntry", "OUTPUT_STRIDES", "REGISTRY", "build_backbone", "import_backbones"]
