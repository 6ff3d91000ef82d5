"""What the generic propagation stages share: their names, output directories and the context a method's
settings are resolved in (:mod:`pipeline.propagation`). Every stage runs once per registered method
(dvc.yaml ``foreach``) and writes ``<outputs>/<stage>/<propagation method>/<CAM method>/``."""
from __future__ import annotations

from pathlib import Path

from pipeline.propagation import PropagationMethod, StageContext, get_propagation, list_propagation
from stages.common import stage_dir
from stages.config import Params

#: The generic stages, in DAG order (stages/<name>.py; dvc.yaml ``<name>@<method>``).
PROP_STAGES = ("prop_labels", "train_prop", "walk", "eval_walk")


def prop_dir(params: Params, stage: str, name: str) -> Path:
    """<outputs>/<stage>/<propagation method>/<CAM method>."""
    return Path(params.paths.outputs) / stage / name / params.method


def source_dir(params: Params, source: str) -> Path:
    """The directory ``crf.source`` names: the CAMs, or a propagation method's walk."""
    return stage_dir(params, "cam", params.method) if source == "cam" else prop_dir(params, "walk", source)


def eval_cam_metrics(params: Params) -> Path:
    return stage_dir(params, "eval_cam", params.method) / "metrics.json"


def context(params: Params, step: str) -> StageContext:
    """What the method's ``step`` (labels, train, walk) may read beyond its own section, and only that (so
    that each stage reads what dvc.yaml declares): the pseudo-mask CRF's kernels for the labels (IRN's label
    CRF), the backbone section for the network; eval_cam's best threshold for any (read only when asked)."""
    from stages.crf import best_cam_threshold

    crf_kernels, backbone = {}, None
    if step == "labels":
        crf_kernels = params.crf.crf_kwargs()
    if step == "train":
        backbone = params.backbone
    return StageContext(cam_threshold=lambda: best_cam_threshold(params), crf_kernels=crf_kernels,
                        backbone=backbone)


def method_and_section(params: Params, name: str) -> tuple[PropagationMethod, object]:
    return get_propagation(name), params.propagation[name]


def command(stage: str, name: str) -> str:
    """The CLI command that writes ``stage`` for method ``name``."""
    return f"wsss-pipe {stage.replace('_', '-')} {name}"


__all__ = ["PROP_STAGES", "command", "context", "eval_cam_metrics", "list_propagation", "method_and_section",
           "prop_dir", "source_dir"]
