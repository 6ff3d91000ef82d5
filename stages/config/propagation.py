"""Label propagation: the section ``propagation`` holds one subsection per registered method
(:mod:`pipeline.propagation`), each validated by the method's own model (``labels``, ``train``, ``walk``);
``crf.source`` names the CAMs or one of these methods."""
from __future__ import annotations

from typing import Any


def validate_propagation(tree: Any) -> dict:
    """``propagation`` of params.yaml: one validated section per registered method."""
    from pipeline.propagation import validate_propagation_params

    if tree is not None and not isinstance(tree, dict):
        raise ValueError("must be a mapping of propagation methods")
    return validate_propagation_params(tree)


def validate_source(source: str) -> str:
    """``crf.source``: ``cam`` or a registered propagation method (its walk is refined)."""
    from pipeline.propagation import list_propagation

    if source != "cam" and source not in list_propagation():
        raise ValueError(f"must be cam or a propagation method ({', '.join(list_propagation())})")
    return source
