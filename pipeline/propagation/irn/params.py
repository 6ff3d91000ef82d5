"""``propagation.irn``: IRN's relation labels, its boundary branch's training and the boundary walk.

Renamed from the sections ``ir_labels``, ``train_irn`` and ``rw_irn`` (README.md, "Renamed parameters and stages");
every default is unchanged.

The demo's params.yaml trains the boundary branch 15 epochs of batch 8 (IRN: 3 of 32, ~1,000 SGD steps on VOC):
the demo's 80 images give 150 steps instead of 15, and its walk goes 40.1 -> 45.0 over the CAM's 39.0
(benchmarks/README.md, issue 19 part 7). MSRC (benchmarks/msrc.sh) keeps 3 of 16, the VOC recipe IRN's 3 of 32."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.propagation.base import PropagationParams, PropagationTraining
from pipeline.settings import Section, unit_or_auto


class IrnLabelsParams(Section):
    """IRN's relation labels: CAM vs a high / low constant background, each refined by the label CRF."""

    fg_threshold: float | Literal["auto"] = "auto"
    bg_threshold: float | Literal["auto"] = "auto"
    gt_prob: float = Field(0.7, gt=0, lt=1)

    @field_validator("fg_threshold", "bg_threshold")
    @classmethod
    def _unit(cls, value):
        if value != "auto" and not 0 <= value <= 1:
            raise ValueError("must lie in [0, 1] or be auto")
        return value

    @model_validator(mode="after")
    def _order(self):
        if "auto" in (self.fg_threshold, self.bg_threshold):
            if self.fg_threshold != self.bg_threshold:
                raise ValueError("fg_threshold and bg_threshold are both auto or both numbers")
            return self
        if self.bg_threshold >= self.fg_threshold:
            raise ValueError("bg_threshold must be below fg_threshold (high threshold = confident foreground)")
        return self


class IrnTrainParams(PropagationTraining):
    """IRN's boundary branch on the frozen backbone (the branch trains at lr * head_lr_mult)."""

    epochs: int = Field(3, ge=1)
    lr: float = Field(0.1, gt=0)
    head_lr_mult: float = Field(1.0, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    scale_min: float = Field(0.5, gt=0)
    scale_max: float = Field(1.5, gt=0)
    color_jitter: float = Field(0.0, ge=0, le=1)
    radius: int = Field(10, ge=2)
    pair_set: Literal["psa", "full"] = "psa"  # pipeline.propagation.pairs.PAIR_SETS (training; the walk: all)
    branch_channels: int = Field(32, ge=1)


class IrnWalkParams(Section):
    """IRN's walk: boundary affinities, T = D^-1 A^beta, 2^exp_times steps, constant background after."""

    beta: float = Field(10.0, gt=0)
    exp_times: int = Field(8, ge=0, le=12)
    radius: int = Field(5, ge=2)
    bg_threshold: float | Literal["auto"] = "auto"
    flip: bool = True

    _threshold_range = field_validator("bg_threshold")(unit_or_auto)


class IrnParams(PropagationParams):
    labels: IrnLabelsParams = IrnLabelsParams()
    train: IrnTrainParams = IrnTrainParams()
    walk: IrnWalkParams = IrnWalkParams()
