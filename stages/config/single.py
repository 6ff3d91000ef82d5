"""The single-stage branch: scribbles, single, eval_single."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from stages.config.base import Section
from stages.config.readout import EvalSegParams
from stages.config.training import SegTrainingParams


class ScribblesParams(Section):
    """Scribble labels for the single-stage branch: read (ScribbleSup) or generated from ground truth."""

    source: Literal["auto", "dataset", "generate"] = "auto"
    width: int = Field(3, ge=1, le=64)
    coverage: float = Field(0.03, gt=0, le=1)
    seed: int = Field(0, ge=0)


RLOSS_SIGMA_XY, RLOSS_CROP = 100.0, 513


class SingleParams(SegTrainingParams):
    """The single-stage branch: segmentation trained end to end with pCE + a regularised loss (the network,
    optimisation and augmentation of train_seg: :class:`SegTrainingParams`)."""

    supervision: Literal["scribble", "image", "full"] = "scribble"
    loss: Literal["pce", "crf", "dfr"] = "dfr"
    crf_weight: float = Field(2.0, ge=0)
    crf_scale: float = Field(0.25, gt=0, le=1)
    sigma_rgb: float = Field(15.0, gt=0)
    sigma_xy: float | Literal["auto"] = "auto"
    warmup_steps: int | Literal["auto"] = "auto"
    sigma_deep: float = Field(0.5, gt=0)
    embed_dim: int = Field(64, ge=2)
    fc_weight: float = Field(1.0, ge=0)
    fc_pixels: int = Field(256, ge=2)
    fc_confidence: float | None = Field(None, gt=0, le=1)
    deep_warmup_steps: int = Field(50, ge=0)
    cls_weight: float = Field(1.0, ge=0)
    seed_fg: float = Field(0.55, gt=0, lt=1)
    seed_bg: float = Field(0.35, ge=0, lt=1)

    @model_validator(mode="after")
    def _seed_order(self):
        if self.seed_bg >= self.seed_fg:
            raise ValueError("seed_bg must be below seed_fg")
        return self

    @field_validator("sigma_xy")
    @classmethod
    def _positive_sigma(cls, value):
        if value != "auto" and value <= 0:
            raise ValueError("must be > 0 or auto")
        return value

    @field_validator("warmup_steps")
    @classmethod
    def _non_negative_warmup(cls, value):
        if value != "auto" and value < 0:
            raise ValueError("must be >= 0 or auto")
        return value

    def warmup(self) -> int:
        """``warmup_steps``, or (auto) the first third of ``steps`` with image labels (the CAM head alone,
        before its seeds train the segmentation) and 0 with scribbles or ground truth (rloss's start)."""
        if self.warmup_steps != "auto":
            return int(self.warmup_steps)
        return self.steps // 3 if self.supervision == "image" else 0

    def kernel_sigma_xy(self) -> float:
        """``sigma_xy``, or (auto) rloss's 100 px at its 513 px crops scaled to ``crop_size``: the same kernel
        width relative to the crop."""
        return RLOSS_SIGMA_XY * self.crop_size / RLOSS_CROP if self.sigma_xy == "auto" else float(self.sigma_xy)


class EvalSingleParams(EvalSegParams):
    use_crf: bool = False
