"""Weakly supervised CAM methods behind one interface (:class:`~pipeline.cam.methods.base.CamMethod`), built
by name. :data:`METHODS` names each method's class; its module (and torch) is imported on first use, so that
params validation and the stages that train no network list the methods without importing torch."""
from __future__ import annotations

from typing import Any

from pipeline.errors import ConfigError
from pipeline.models.lazy_registry import LazyRegistry

METHODS = LazyRegistry({
    "cam": "pipeline.cam.methods.cam:PlainCAM",
    "seam": "pipeline.cam.methods.seam:SEAM",
    "ppl": "pipeline.cam.methods.ppl:PPL",
    "cpn": "pipeline.cam.methods.cpn:CPN",
})


def build_method(name: str, backbone, num_classes: int, **options: Any):
    """Build method ``name`` (a :class:`~pipeline.cam.methods.base.CamMethod`) on ``backbone``; ``options``
    are the method's own keyword arguments (its params section)."""
    if name not in METHODS:
        raise ConfigError(f"method: unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](backbone, num_classes, **options)


__all__ = ["METHODS", "build_method"]
