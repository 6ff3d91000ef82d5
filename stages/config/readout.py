"""CAM read-out and the sections measuring or drawing masks: cam, eval_cam, crf, eval_seg, overlays,
inspect."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from stages.config.base import Section
from stages.config.propagation import validate_source
from stages.table import CRF_KERNEL_KEYS


class CamParams(Section):
    scales: list[float] = Field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0], min_length=1)
    flip: bool = True
    normalize: Literal["auto", "max", "minmax"] = "auto"
    loader_workers: int = Field(2, ge=0, description="processes decoding images ahead of the forward; 0 = inline")
    writers: int = Field(2, ge=0, description="threads compressing and writing CAMs behind it; 0 = inline")

    def norm_for(self, method_norm: str) -> str:
        """The read-out normalisation: ``auto`` = the method's own (max: cam, ppl; minmax: seam, cpn)."""
        return method_norm if self.normalize == "auto" else self.normalize

    @field_validator("scales")
    @classmethod
    def _positive(cls, scales: list[float]) -> list[float]:
        if any(s <= 0 for s in scales):
            raise ValueError("every scale must be > 0")
        return scales


class EvalCamParams(Section):
    threshold_min: float = Field(0.0, ge=0, le=1)
    threshold_max: float = Field(0.95, ge=0, le=1)
    threshold_step: float = Field(0.01, gt=0, le=1)

    @model_validator(mode="after")
    def _range(self):
        if self.threshold_min > self.threshold_max:
            raise ValueError("threshold_min must not exceed threshold_max")
        return self


class CrfParams(Section):
    """Dense-CRF pseudo masks: PSA's Gaussian kernel, IRN's bilateral kernel by default."""

    source: str = "cam"  # cam, or a registered propagation method (pipeline.propagation): its walk
    bg_mode: Literal["threshold", "power"] = "threshold"
    bg_threshold: float | Literal["auto"] = "auto"
    bg_alpha: float = Field(16.0, gt=0)
    use_crf: bool = True
    iterations: int = Field(10, ge=1)
    gauss_sxy: float = Field(3.0, gt=0)
    gauss_compat: float = Field(3.0, ge=0)
    bilateral_sxy: float = Field(50.0, gt=0)
    bilateral_srgb: float = Field(5.0, gt=0)
    bilateral_compat: float = Field(10.0, ge=0)
    confidence: float = Field(0.0, ge=0, le=1)

    _known_source = field_validator("source")(lambda source: validate_source(source))

    @field_validator("bg_threshold")
    @classmethod
    def _threshold_range(cls, value):
        if value != "auto" and not 0.0 <= value <= 1.0:
            raise ValueError("must be auto or lie in [0, 1]")
        return value

    def crf_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in CRF_KERNEL_KEYS}


class EvalSegParams(Section):
    scales: list[float] = Field(default_factory=lambda: [1.0, 0.5, 0.75, 1.25, 1.5], min_length=1)
    flip: bool = True
    use_crf: bool = True
    headline: Literal["best", "multi_scale", "single_scale", "multi_scale_crf"] = "best"

    _positive = field_validator("scales")(CamParams._positive.__func__)

    @model_validator(mode="after")
    def _crf_headline_needs_crf(self):
        if self.headline == "multi_scale_crf" and not self.use_crf:
            raise ValueError("headline multi_scale_crf needs use_crf: true")
        return self


class OverlaysParams(Section):
    count: int = Field(8, ge=0)


class InspectParams(Section):
    """The inspection report (stages/inspect.py)."""

    cam_threshold: float | Literal["auto"] = "auto"
    thumb_size: int = Field(96, ge=16, le=512)
    view_size: int = Field(320, ge=32, le=2048)
    page_size: int = Field(200, ge=10)
    compare_methods: bool = True

    _threshold_range = field_validator("cam_threshold")(CrfParams._threshold_range.__func__)
