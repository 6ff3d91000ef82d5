"""The base of every params.yaml section: unknown keys forbidden, values validated on assignment, no
boolean for a number."""
from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info) -> Any:
        """``true`` is not 1: a boolean for a number (int or float, optional, or a list's item) is an error."""
        if _bool_for_number(value, cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number, not a boolean")
        return value


def _bool_for_number(value: Any, annotation: Any) -> bool:
    if isinstance(value, (list, tuple)) and typing.get_origin(annotation) in (list, tuple):
        item = (typing.get_args(annotation) or (Any,))[0]
        return any(_bool_for_number(v, item) for v in value)
    if not isinstance(value, bool):
        return False
    allowed = set(typing.get_args(annotation)) or {annotation}
    return bool not in allowed and bool(allowed & {int, float})
