"""Propagation methods behind one interface (:class:`PropagationMethod`), registered by name: CAMs ->
relation labels -> a network trained on them -> a random walk over its affinities (or boundaries).

Adding a method is one package here that registers itself (``@register_propagation("name")``) and one
params section ``propagation.<name>``; the stages, the CLI, dvc.yaml's ``foreach`` and the reports take the
list from :func:`list_propagation`.
"""
from __future__ import annotations

from pipeline.propagation.base import PropagationMethod, PropagationParams, PropagationTraining, StageContext
from pipeline.propagation.registry import (
    get_propagation,
    list_propagation,
    register_propagation,
    unregister_propagation,
)

# the built-in methods register themselves on import
from pipeline.propagation import affinitynet, irn  # noqa: E402,F401  isort: skip


def validate_propagation_params(tree: dict | None) -> dict[str, PropagationParams]:
    """``propagation`` of params.yaml: one validated section per registered method (defaults for those not
    given). A ``ValueError`` names the key below ``propagation`` (``irn.walk.beta: ...``)."""
    from pydantic import ValidationError

    tree = dict(tree or {})
    unknown = [name for name in tree if name not in list_propagation()]
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown propagation method; choose one of {', '.join(list_propagation())}")
    sections = {}
    for name in list_propagation():
        model = get_propagation(name).Params
        value = tree.get(name)
        if isinstance(value, model):
            sections[name] = value
            continue
        try:
            sections[name] = model.model_validate(value if value is not None else {})
        except ValidationError as exc:
            error = exc.errors()[0]
            key = ".".join(str(part) for part in (name, *error["loc"]))
            detail = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
            got = error.get("input")
            suffix = "" if error["type"] == "extra_forbidden" or isinstance(got, dict) else f" (got {got!r})"
            raise ValueError(f"{key}: {detail}{suffix}") from None
    return sections


__all__ = ["PropagationMethod", "PropagationParams", "PropagationTraining", "StageContext", "get_propagation",
           "list_propagation", "register_propagation", "unregister_propagation", "validate_propagation_params"]
