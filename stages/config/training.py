"""The classifier (train_cls, recam) and segmentation (train_seg) sections; what trained stages share
(TrainingParams, ResumableParams) lives in :mod:`pipeline.settings`."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.settings import ResumableParams, TrainingParams


class TrainClsParams(TrainingParams, ResumableParams):
    epochs: int = Field(15, ge=1)
    freeze_bn: bool | Literal["auto"] = "auto"

    def freezes_bn(self, pretrained: str | None, generated_data: bool = False) -> bool:
        """``auto``: freeze the backbone's batch norm when it starts from pretrained weights, except on the
        generated demo dataset (:meth:`Params.uses_generated_data`), whose flat shapes need statistics of
        their own (benchmarks/README.md, "dvc repro on the built-in synthetic dataset")."""
        if self.freeze_bn == "auto":
            return pretrained not in (None, "none") and not generated_data
        return self.freeze_bn


class RecamParams(ResumableParams):
    """ReCAM fine-tuning of the trained classifier (stage ``recam``, :mod:`pipeline.cam.recam`); augmentation,
    batch size and batch-norm freezing are ``train_cls``'s. Defaults: the authors' (zhaozhengChen/ReCAM), but
    for the two measured departures of :mod:`pipeline.cam.recam` (momentum 0.9, 12 epochs)."""

    enabled: bool = False
    epochs: int = Field(12, ge=1)
    lr: float = Field(5e-5, gt=0)
    head_lr_mult: float = Field(10.0, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    loss_weight: float = Field(1.0, ge=0)


class SegTrainingParams(TrainingParams, ResumableParams):
    """The segmentation recipe that train_seg and train_single share (:mod:`pipeline.segmentation.training`)."""

    head: Literal["v3", "v2"] = "v3"
    steps: int = Field(400, ge=1)
    batch_size: int = Field(8, ge=2)
    scale_min: float = Field(0.5, gt=0)
    scale_max: float = Field(1.5, gt=0)
    scale_reference: Literal["image", "crop"] = "image"
    freeze_backbone_bn: bool | Literal["auto"] = "auto"
    lr: float | Literal["auto"] = "auto"
    color_jitter: float = Field(0.0, ge=0, le=1)
    val_every: int = Field(100, ge=1)

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, value):
        if value != "auto" and value <= 0:
            raise ValueError(f"must be > 0 or auto, got {value}")
        return value

    def freezes_backbone_bn(self, pretrained: str | None, generated_data: bool = False) -> bool:
        """``auto``: keep the backbone's batch norms at their pretrained state when there is one, except on
        the generated demo dataset (as :meth:`TrainClsParams.freezes_bn`)."""
        if self.freeze_backbone_bn == "auto":
            return pretrained not in (None, "none") and not generated_data
        return self.freeze_backbone_bn

    def learning_rate(self, frozen_backbone_bn: bool) -> float:
        """``auto``: SEAM's 1e-3 with frozen backbone batch norms (0.01 diverges there), 1e-2 when they train
        (at 1e-3 they learn too slowly: benchmarks/README.md, DeepLab and the demo sections)."""
        if self.lr == "auto":
            return 1e-3 if frozen_backbone_bn else 1e-2
        return self.lr


class TrainSegParams(SegTrainingParams):
    """DeepLab on pseudo masks (labels: pseudo) or on ground truth (labels: gt, the upper bound)."""

    labels: Literal["pseudo", "gt"] = "pseudo"
    split: str | None = None
