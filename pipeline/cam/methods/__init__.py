"""Weakly supervised CAM methods behind one interface (:class:`CamMethod`), built by name."""
from __future__ import annotations

from typing import Any

from pipeline.cam.methods.base import CamMethod
from pipeline.cam.methods.cam import PlainCAM
from pipeline.cam.methods.cpn import CPN
from pipeline.cam.methods.ppl import PPL
from pipeline.cam.methods.seam import SEAM
from pipeline.errors import ConfigError
from pipeline.models.backbones.base import Backbone

METHODS: dict[str, type[CamMethod]] = {"cam": PlainCAM, "seam": SEAM, "ppl": PPL, "cpn": CPN}


def build_method(name: str, backbone: Backbone, num_classes: int, **options: Any) -> CamMethod:
    """Build method ``name``; ``options`` are the method's own keyword arguments (its params section)."""
    if name not in METHODS:
        raise ConfigError(f"method: unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](backbone, num_classes, **options)


__all__ = ["CamMethod", "METHODS", "build_method"]
