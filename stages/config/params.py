"""The whole of params.yaml: one field per section."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from stages.config.base import Section
from stages.config.data import BackboneParams, DataParams, PathsParams, SyntheticParams
from stages.config.methods import validate_method_options
from stages.config.propagation import validate_propagation
from stages.config.readout import CamParams, CrfParams, EvalCamParams, EvalSegParams, InspectParams, OverlaysParams
from stages.config.single import EvalSingleParams, ScribblesParams, SingleParams
from stages.config.training import RecamParams, TrainClsParams, TrainSegParams

class RecipeInfo(Section):
    """A recipe's metadata (recipes/*/*.yaml): what it reproduces, where from, under which protocol."""

    name: str
    paper: str
    reproduces: dict[str, Any] = Field(default_factory=dict)  # figure -> {value, split, protocol, source}
    gpu_time: str = ""
    departures: list[str] = Field(default_factory=list)


class Params(Section):
    recipe: RecipeInfo | None = None
    seed: int = Field(0, ge=0)
    device: str = "auto"
    workers: int = Field(0, ge=0, description="processes for per-image stages; 0 = all cores")
    method: str = "cam"  # a name of pipeline.cam.methods.METHODS
    paths: PathsParams = PathsParams()
    synthetic: SyntheticParams = SyntheticParams()
    data: DataParams = DataParams()
    backbone: BackboneParams = BackboneParams()
    train_cls: TrainClsParams = TrainClsParams()
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)
    recam: RecamParams = RecamParams()
    cam: CamParams = CamParams()
    eval_cam: EvalCamParams = EvalCamParams()
    crf: CrfParams = CrfParams()
    train_seg: TrainSegParams = TrainSegParams()
    eval_seg: EvalSegParams = EvalSegParams()
    overlays: OverlaysParams = OverlaysParams()
    inspect: InspectParams = InspectParams()
    # one section per registered propagation method, each validated by the method's own model
    propagation: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    scribbles: ScribblesParams = ScribblesParams()
    single: SingleParams = SingleParams()
    eval_single: EvalSingleParams = EvalSingleParams()

    @field_validator("propagation", mode="before")
    @classmethod
    def _propagation(cls, tree: Any) -> dict:
        return validate_propagation(tree)

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        from pipeline.cam.methods import METHODS

        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
        return name

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise ValueError("must be auto, cpu or cuda[:N]")
        return device

    def uses_generated_data(self) -> bool:
        """Whether ``data.root`` is the dataset the ``synthetic`` stage writes (``synthetic.root``)."""
        return Path(self.data.root).resolve() == Path(self.synthetic.root).resolve()

    def method_options(self, name: str | None = None) -> dict[str, Any]:
        """The validated keyword options of method ``name`` (default: the selected method)."""
        name = name or self.method
        return validate_method_options(name, self.methods.get(name) or {})
