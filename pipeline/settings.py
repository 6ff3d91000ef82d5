"""The pydantic bases of params.yaml's sections, shared by stages/config/ and by the method families
that contribute their own sections (:mod:`pipeline.propagation`): strict, unknown keys refused."""
from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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


class TrainingParams(Section):
    """What every trained stage shares: SGD with poly decay, augmentation, loading, mixed precision."""

    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.01, gt=0)
    head_lr_mult: float = Field(10.0, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    crop_size: int = Field(128, ge=16)
    scale_min: float = Field(0.7, gt=0)
    scale_max: float = Field(1.3, gt=0)
    color_jitter: float = Field(0.3, ge=0, le=1)
    amp: bool = True
    loader_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _scale_order(self):
        if self.scale_min > self.scale_max:
            raise ValueError("scale_min must not exceed scale_max")
        return self


class ResumableParams(Section):
    """Resumable training stages: every trained stage (the one loop, :func:`pipeline.engine.trainer.train`)."""

    resume_every: int = Field(200, ge=0, description="steps between resume checkpoints; 0 = none")


def unit_or_auto(value: float | Literal["auto"]) -> float | Literal["auto"]:
    """A threshold field's check: ``auto`` or a number in [0, 1]."""
    if value != "auto" and not 0.0 <= value <= 1.0:
        raise ValueError("must be auto or lie in [0, 1]")
    return value
