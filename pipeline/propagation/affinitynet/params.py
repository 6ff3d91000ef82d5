"""``propagation.affinitynet``: PSA's confident labels, AffinityNet training and its random walk.

Renamed from the sections ``aff_labels``, ``train_aff`` and ``rw`` (README.md, "Renamed parameters and stages");
every default is unchanged. The class defaults are PSA's grid (stride 8), pair set (``psa``) and embedding (448).

Departures set by the demo's params.yaml, measured on its 96-px images (benchmarks/README.md, issue 19 part 7):
``train.grid_stride: 4`` and ``train.pair_set: full`` (at stride 8 no PSA pair starts in 78% of a 12 x 12 grid's
cells and even perfect affinities lift the CAM by only 2.3 points; at stride 4 with every pair, up to 11),
``train.embed_dim: 64`` (a third of the training time, the same walk), ``train.lr: 0.03`` and
``walk.logt: 4`` (walk 37.7 -> 43.2 over the stride-8 demo, the CAM 39.0). MSRC (benchmarks/msrc.sh) and the
VOC recipes keep PSA's values."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.propagation.base import PropagationParams, PropagationTraining
from pipeline.settings import Section, unit_or_auto


class AffinityLabelsParams(Section):
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

    def crf_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in ("iterations", "gauss_sxy", "gauss_compat", "bilateral_sxy",
                                              "bilateral_srgb", "bilateral_compat")}

    @model_validator(mode="after")
    def _order(self):
        if self.fg_alpha >= self.bg_alpha:
            raise ValueError("fg_alpha must be below bg_alpha (low alpha = confident foreground)")
        return self


class AffinityTrainParams(PropagationTraining):
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(8, ge=1)
    radius: int = Field(5, ge=2)
    pair_set: Literal["psa", "full"] = "psa"  # pipeline.propagation.pairs.PAIR_SETS; the walk uses the model's
    grid_stride: int = Field(8, ge=1)
    embed_dim: int = Field(448, ge=1)


class AffinityWalkParams(Section):
    """Random walk; ``bg_mode`` psa: (1 - max fg)^bg_alpha walked with the classes; irn: the classes walked
    alone, divided by their maximum, constant background bg_threshold."""

    beta: float = Field(16.0, gt=0)
    logt: int = Field(5, ge=0, le=12)
    bg_mode: Literal["psa", "irn"] = "psa"
    bg_threshold: float | Literal["auto"] = "auto"
    bg_alpha: float | Literal["auto"] = "auto"

    _threshold_range = field_validator("bg_threshold")(unit_or_auto)

    @field_validator("bg_alpha")
    @classmethod
    def _positive_alpha(cls, value):
        if value != "auto" and not value > 0:
            raise ValueError("must be auto or > 0")
        return value


class AffinityNetParams(PropagationParams):
    labels: AffinityLabelsParams = AffinityLabelsParams()
    train: AffinityTrainParams = AffinityTrainParams()
    walk: AffinityWalkParams = AffinityWalkParams()
