"""params.yaml: the single source of settings, one section per stage, validated on load.

An unknown key, a wrong type or an out-of-range value is a :class:`ConfigError` whose one-line message
names the key; nothing is written before parameters validate.
"""
from __future__ import annotations

import inspect
import math
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import ConfigError
from pipeline.settings import ResumableParams, Section, TrainingParams

MethodName = Literal["cam", "seam", "ppl", "cpn"]


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
    """ReCAM fine-tuning of the trained classifier (stage ``recam``, :mod:`pipeline.recam`); augmentation,
    batch size and batch-norm freezing are ``train_cls``'s. Defaults: the authors' (zhaozhengChen/ReCAM)."""

    enabled: bool = False
    epochs: int = Field(4, ge=1)
    lr: float = Field(5e-5, gt=0)
    head_lr_mult: float = Field(10.0, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(1e-4, ge=0, lt=1)
    loss_weight: float = Field(1.0, ge=0)


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

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        from pipeline.propagation import list_propagation

        if source != "cam" and source not in list_propagation():
            raise ValueError(f"must be cam or a propagation method ({', '.join(list_propagation())})")
        return source

    @field_validator("bg_threshold")
    @classmethod
    def _threshold_range(cls, value):
        if value != "auto" and not 0.0 <= value <= 1.0:
            raise ValueError("must be auto or lie in [0, 1]")
        return value

    def crf_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in ("iterations", "gauss_sxy", "gauss_compat", "bilateral_sxy",
                                              "bilateral_srgb", "bilateral_compat")}


class TrainSegParams(TrainingParams, ResumableParams):
    """DeepLab on pseudo masks (labels: pseudo) or on ground truth (labels: gt, the upper bound)."""

    labels: Literal["pseudo", "gt"] = "pseudo"
    split: str | None = None
    head: Literal["v3", "v2"] = "v3"
    steps: int = Field(400, ge=1)
    batch_size: int = Field(8, ge=2)
    scale_min: float = Field(0.5, gt=0)
    scale_max: float = Field(1.5, gt=0)
    scale_reference: Literal["image", "crop"] = "image"
    freeze_backbone_bn: bool | Literal["auto"] = "auto"
    lr: float = Field(1e-3, gt=0)
    color_jitter: float = Field(0.0, ge=0, le=1)
    val_every: int = Field(100, ge=1)

    def freezes_backbone_bn(self, pretrained: str | None, generated_data: bool = False) -> bool:
        """``auto``: keep the backbone's batch norms at their pretrained state when there is one, except on
        the generated demo dataset (as :meth:`TrainClsParams.freezes_bn`)."""
        if self.freeze_backbone_bn == "auto":
            return pretrained not in (None, "none") and not generated_data
        return self.freeze_backbone_bn


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


class ScribblesParams(Section):
    """Scribble labels for the single-stage branch: read (ScribbleSup) or generated from ground truth."""

    source: Literal["auto", "dataset", "generate"] = "auto"
    width: int = Field(3, ge=1, le=64)
    coverage: float = Field(0.03, gt=0, le=1)
    seed: int = Field(0, ge=0)


RLOSS_SIGMA_XY, RLOSS_CROP = 100.0, 513


class SingleParams(TrainingParams, ResumableParams):
    """The single-stage branch: segmentation trained end to end with pCE + a regularised loss."""

    supervision: Literal["scribble", "image", "full"] = "scribble"
    loss: Literal["pce", "crf", "dfr"] = "dfr"
    head: Literal["v3", "v2"] = "v3"
    steps: int = Field(400, ge=1)
    batch_size: int = Field(8, ge=2)
    scale_min: float = Field(0.5, gt=0)
    scale_max: float = Field(1.5, gt=0)
    color_jitter: float = Field(0.0, ge=0, le=1)
    val_every: int = Field(100, ge=1)
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
        width relative to the crop (images are fitted into the crop)."""
        return RLOSS_SIGMA_XY * self.crop_size / RLOSS_CROP if self.sigma_xy == "auto" else float(self.sigma_xy)


class EvalSingleParams(EvalSegParams):
    use_crf: bool = False


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
    method: MethodName = "cam"
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
        from pipeline.propagation import validate_propagation_params

        if tree is not None and not isinstance(tree, dict):
            raise ValueError("must be a mapping of propagation methods")
        return validate_propagation_params(tree)

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


def validate_method_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check ``methods.<name>`` against the method's constructor: known keys, values of the annotated
    types (``3e-1``, which YAML reads as a string, is a float here as everywhere else in params.yaml)."""
    from pipeline.methods import METHODS

    if name not in METHODS:
        raise ConfigError(f"methods.{name}: unknown method {name!r}; choose one of {', '.join(METHODS)}")
    init = METHODS[name].__init__
    signature = inspect.signature(init)
    accepted = {k: p for k, p in signature.parameters.items() if k not in ("self", "backbone", "num_classes")}
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an annotation pydantic cannot see; fall back to the defaults' types
        hints = {}
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if key not in accepted:
            known = ", ".join(accepted) or "none"
            raise ConfigError(f"methods.{name}.{key}: unknown option (known: {known})")
        if key in hints:
            value = _validate_as(f"methods.{name}.{key}", value, hints[key])
        else:
            default = accepted[key].default
            if default is not inspect.Parameter.empty and default is not None:
                value = _coerce(f"methods.{name}.{key}", value, default)
        checked[key] = value
    return checked


def _validate_as(key: str, value: Any, annotation: Any) -> Any:
    if isinstance(value, bool) and annotation in (int, float):
        raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}")
    try:
        return TypeAdapter(annotation, config=ConfigDict(allow_inf_nan=False)).validate_python(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(f"{key}: {error['msg']} (got {value!r})") from None
    except Exception:  # not a type pydantic knows (e.g. a module); the constructor checks it
        return value


def _coerce(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(value, bool) and isinstance(value, int):
        return value
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    if type(value) is type(default):
        return value
    raise ConfigError(f"{key}: expected {type(default).__name__}, got {value!r}")


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping (a section written twice) is an
    error instead of the last one silently winning."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(f"line {line}: key {key!r} is given twice (first on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_tree(path: str | Path) -> dict:
    """The mapping in YAML file ``path`` (a params file or a recipe overlay)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameters file not found")
    try:
        tree = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return tree


def merge_tree(base: dict, overlay: dict) -> dict:
    """``overlay`` merged into a copy of ``base``: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_tree(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_params(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = (),
                recipes: list[str] | tuple[str, ...] = ()) -> Params:
    """Read and validate ``path`` with the ``recipes`` overlays (recipes/*/*.yaml) merged over it, in
    order, then the ``section.key=value`` overrides on top."""
    tree = read_tree(path)
    for recipe in recipes:
        tree = merge_tree(tree, read_tree(recipe))
    path = " + ".join(str(p) for p in (path, *recipes))  # error messages name every file merged
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    try:
        params = Params.model_validate(tree)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        got = error.get("input")
        detail = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            detail = "unknown key"
        if error["loc"] == ("propagation",) and ": " in detail:  # a method's own section names its key
            sub, detail = detail.split(": ", 1)
            key, got = f"propagation.{sub}", {}  # the method's message carries its own "(got ...)"
        suffix = ("" if error["type"] == "extra_forbidden" or isinstance(got, dict) or repr(got) in detail
                  else f" (got {got!r})")
        raise ConfigError(f"{path}: {key}: {detail}{suffix}") from None
    for name, options in params.methods.items():
        if not isinstance(options, dict):
            raise ConfigError(f"{path}: methods.{name}: must be a mapping of options")
        params.methods[name] = validate_method_options(name, options)
    return params
