"""Where things are: outputs, the generated demo dataset, the dataset read, the backbone."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from stages.config.base import Section


class PathsParams(Section):
    outputs: str = "outputs"


class SyntheticParams(Section):
    root: str = "data/synthetic"
    num_train: int = Field(120, ge=1)
    num_val: int = Field(40, ge=1)
    image_size: int = Field(128, ge=32, le=1024)
    seed: int = Field(0, ge=0)
    max_objects: int = Field(3, ge=1, le=6)
    object_scale: float = Field(1.0, ge=0.5, le=2.0)
    body_cue: float = Field(0.0, ge=0.0, le=1.0)


class DataParams(Section):
    root: str = "data/synthetic"
    train_split: str = "train"
    val_split: str = "val"
    eval_split: str | None = None  # where eval_cam / eval_walk / eval_pseudo measure (null: train_split)

    def measured_split(self) -> str:
        """The split the train-side figures are measured on: ``eval_split``, else ``train_split`` (VOC:
        CAMs made on train_aug, measured on train, the papers' comparison)."""
        return self.eval_split or self.train_split


class BackboneParams(Section):
    name: str = "efficientnet_lite0"
    output_stride: Literal[8, 16, 32] = 16
    pretrained: str | None = "imagenet"

    @field_validator("pretrained")
    @classmethod
    def _named_weights(cls, pretrained: str | None) -> str | None:
        if pretrained is not None and not pretrained.strip():
            raise ValueError("empty; give none, imagenet or the path of a weights file")
        return pretrained

    @field_validator("name")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        from pipeline.models.backbones import BACKBONES

        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
        return name

    @model_validator(mode="after")
    def _supported_stride(self):
        from pipeline.models.backbones import OUTPUT_STRIDES

        if self.output_stride not in OUTPUT_STRIDES[self.name]:
            allowed = ", ".join(str(s) for s in OUTPUT_STRIDES[self.name])
            raise ValueError(f"{self.name} supports output_stride {allowed}, got {self.output_stride}")
        return self
