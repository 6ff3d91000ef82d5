"""Label propagation: AffinityNet (aff_labels, train_aff, rw) and IRN (ir_labels, train_irn, rw_irn)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from stages.config.base import Section
from stages.config.readout import CrfParams
from stages.config.training import ResumableParams, TrainingParams


class AffLabelsParams(Section):
    """PSA's confident labels: CRF at a low and a high background alpha, averaged over grid cells."""

    fg_alpha: float = Field(4.0, gt=0)
    bg_alpha: float = Field(32.0, gt=0)
    # the confident-label CRF's own kernels (PSA's crf_inference), separate from the pseudo-mask CRF
    iterations: int = Field(10, ge=1)
    gauss_sxy: float = Field(3.0, gt=0)
    gauss_compat: float = Field(3.0, ge=0)
    bilateral_sxy: float = Field(80.0, gt=0)
    bilateral_srgb: float = Field(13.0, gt=0)
    bilateral_compat: float = Field(10.0, ge=0)

    crf_kwargs = CrfParams.crf_kwargs

    @model_validator(mode="after")
    def _order(self):
        if self.fg_alpha >= self.bg_alpha:
            raise ValueError("fg_alpha must be below bg_alpha (low alpha = confident foreground)")
        return self


class TrainAffParams(TrainingParams, ResumableParams):
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(8, ge=1)
    radius: int = Field(5, ge=2)
    pair_set: Literal["psa", "full"] = "psa"  # pipeline.affinity.PAIR_SETS; the walk (rw) uses the model's
    grid_stride: int = Field(8, ge=1)
    embed_dim: int = Field(448, ge=1)


class RwParams(Section):
    """Random walk; ``bg_mode`` psa: (1 - max fg)^bg_alpha walked with the classes; irn: the classes walked
    alone, divided by their maximum, constant background bg_threshold."""

    beta: float = Field(16.0, gt=0)
    logt: int = Field(5, ge=0, le=12)
    bg_mode: Literal["psa", "irn"] = "psa"
    bg_threshold: float | Literal["auto"] = "auto"
    bg_alpha: float | Literal["auto"] = "auto"

    _threshold_range = field_validator("bg_threshold")(CrfParams._threshold_range.__func__)

    @field_validator("bg_alpha")
    @classmethod
    def _positive_alpha(cls, value):
        if value != "auto" and not value > 0:
            raise ValueError("must be auto or > 0")
        return value


class IrLabelsParams(Section):
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


class TrainIrnParams(TrainingParams, ResumableParams):
    """IRN's boundary branch on the frozen backbone (the branch trains at lr * head_lr_mult)."""

    epochs: int = Field(3, ge=1)
    lr: float = Field(0.1, gt=0)
    head_lr_mult: float = Field(1.0, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    scale_min: float = Field(0.5, gt=0)
    scale_max: float = Field(1.5, gt=0)
    color_jitter: float = Field(0.0, ge=0, le=1)
    radius: int = Field(10, ge=2)
    pair_set: Literal["psa", "full"] = "psa"  # pipeline.affinity.PAIR_SETS (training pairs; IRN's walk: all)
    branch_channels: int = Field(32, ge=1)


class RwIrnParams(Section):
    """IRN's walk: boundary affinities, T = D^-1 A^beta, 2^exp_times steps, constant background after."""

    beta: float = Field(10.0, gt=0)
    exp_times: int = Field(8, ge=0, le=12)
    radius: int = Field(5, ge=2)
    bg_threshold: float | Literal["auto"] = "auto"
    flip: bool = True

    _threshold_range = field_validator("bg_threshold")(RwParams._threshold_range.__func__)
