"""Per-image scores of each pipeline stage, computed with the same functions as the ``eval_*`` stages.

A stage's label map for one image is scored with :func:`pipeline.metrics.confusion_matrix` against the
ground truth and :func:`pipeline.metrics.mean_iou` of that one confusion, so a report row equals what
``eval_cam`` / ``eval_walk`` / ``eval_pseudo`` / ``eval_seg`` / ``eval_single`` give for a split holding that image alone; the
sum of the rows' confusions gives their dataset figures.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.metrics import confusion_matrix, iou_per_class, mean_iou, scores_to_label

# The stages a report row can hold, in pipeline order, with their display names: each registered
# propagation method's walk (key: the method's name, :mod:`pipeline.propagation`) refines the CAMs; "single"
# is the single-stage branch's prediction (eval_single), beside the multi-stage one (pred), not a refinement.
def walk_keys() -> list[str]:
    """The report keys of the walks: the registered propagation methods, in registration order."""
    from pipeline.propagation import list_propagation

    return list_propagation()


def stage_names() -> dict[str, str]:
    """Every report stage key -> its display name, in pipeline order."""
    from pipeline.propagation import get_propagation

    return ({"cam": "CAM"} | {name: get_propagation(name).title for name in walk_keys()}
            | {"pseudo": "pseudo mask", "pred": "prediction", "single": "single-stage prediction"})


def pipeline_keys() -> tuple[str, ...]:
    """The multi-stage pipeline's stages, whose last scored one is a row's "final" mIoU."""
    return ("cam", *walk_keys(), "pseudo", "pred")


def cam_label_map(cams: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """The CAM's label map at a background threshold: eval_cam's rule (best class if its score > t)."""
    return scores_to_label(cams, keys, threshold)


def score(label: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[np.ndarray, float | None]:
    """(confusion, mIoU or None when no class occurs) of one label map against its ground truth."""
    conf = confusion_matrix(label, gt, num_classes)
    miou = mean_iou(conf)
    return conf, (None if math.isnan(miou) else round(miou, 6))


def lineage(crf_source: str) -> dict[str, str]:
    """Which stage each stage refines: the pairs whose gain/loss a row reports (every walk refines the CAM;
    the pseudo mask refines what ``crf.source`` names: the CAM or a propagation method's walk)."""
    walks = walk_keys()
    return ({name: "cam" for name in walks} | {"pseudo": crf_source if crf_source in walks else "cam"}
            | {"pred": "pseudo"})


def gains(scores: dict[str, float | None], parents: dict[str, str]) -> dict[str, float]:
    """mIoU(stage) - mIoU(the stage it refines), for every pair scored on this image ("irn-cam": ...)."""
    out = {}
    for stage, parent in parents.items():
        if scores.get(stage) is not None and scores.get(parent) is not None:
            out[f"{stage}-{parent}"] = round(scores[stage] - scores[parent], 6)
    return out


def per_class_iou(conf: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else round(float(v), 6) for v in iou_per_class(conf)]


def dataset_miou(conf: np.ndarray) -> float | None:
    miou = mean_iou(conf) if conf.sum() else float("nan")
    return None if math.isnan(miou) else round(miou, 6)
