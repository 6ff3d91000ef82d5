"""The registry of propagation methods, as torchvision's ``models/_api.py``: ``register_propagation`` (a
class decorator), ``get_propagation`` and ``list_propagation``. The CLI, params validation, dvc.yaml (a test
checks its ``foreach`` lists) and the reports take the list of methods from here."""
from __future__ import annotations

from typing import Callable, TypeVar

from pipeline.errors import ConfigError
from pipeline.propagation.base import PropagationMethod

M = TypeVar("M", bound=type[PropagationMethod])

_REGISTRY: dict[str, type[PropagationMethod]] = {}
RESERVED = ("cam",)  # ``crf.source: cam`` reads the CAMs themselves


def register_propagation(name: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`PropagationMethod` subclass under ``name`` (sets ``cls.name``)."""
    def wrap(cls: M) -> M:
        if not name.isidentifier() or name in RESERVED:
            raise ValueError(f"propagation method name {name!r} must be an identifier other than {RESERVED}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"propagation method {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return wrap


def unregister_propagation(name: str) -> None:
    """Remove ``name`` (tests that register a method of their own)."""
    _REGISTRY.pop(name, None)


def list_propagation() -> list[str]:
    """Registered method names, in registration order."""
    return list(_REGISTRY)


def get_propagation(name: str) -> PropagationMethod:
    """An instance of method ``name``; a clear error names the registered ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"propagation method {name!r} is not registered; choose one of "
                          f"{', '.join(_REGISTRY) or 'none'}")
    return _REGISTRY[name]()
