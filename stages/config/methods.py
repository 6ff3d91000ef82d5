"""``methods.<name>``: a CAM method's options, checked against its constructor's signature."""
from __future__ import annotations

import inspect
import math
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from pipeline.errors import ConfigError


def validate_method_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check ``methods.<name>`` against the method's constructor: known keys, values of the annotated
    types (``3e-1``, which YAML reads as a string, is a float here as everywhere else in params.yaml)."""
    from pipeline.cam.methods import METHODS
    from pipeline.models.lazy_registry import init_signature

    if name not in METHODS:
        raise ConfigError(f"methods.{name}: unknown method {name!r}; choose one of {', '.join(METHODS)}")
    built = ("self", "backbone", "num_classes")  # what the stages pass, not options
    # read from the method's source: no torch (without annotations pydantic can see: the defaults' types)
    signature, hints = init_signature(METHODS.target(name), unread=built)
    accepted = {k: p for k, p in signature.parameters.items() if k not in built}
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if key not in accepted:
            known = ", ".join(accepted) or "none"
            raise ConfigError(f"methods.{name}.{key}: unknown option (known: {known})")
        if key in hints:
            value = _validate_as(f"methods.{name}.{key}", value, hints[key])
        else:
            default = accepted[key].default
            if default is not inspect.Parameter.empty and default is not None:
                value = _coerce(f"methods.{name}.{key}", value, default)
        checked[key] = value
    return checked


def _validate_as(key: str, value: Any, annotation: Any) -> Any:
    if isinstance(value, bool) and annotation in (int, float):
        raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}")
    try:
        return TypeAdapter(annotation, config=ConfigDict(allow_inf_nan=False)).validate_python(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(f"{key}: {error['msg']} (got {value!r})") from None
    except Exception:  # not a type pydantic knows (e.g. a module); the constructor checks it
        return value


def _coerce(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(value, bool) and isinstance(value, int):
        return value
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    if type(value) is type(default):
        return value
    raise ConfigError(f"{key}: expected {type(default).__name__}, got {value!r}")
