"""Per-image scores of each pipeline stage, computed with the same functions as the ``eval_*`` stages.

A stage's label map for one image is scored with :func:`pipeline.metrics.confusion_matrix` against the
ground truth and :func:`pipeline.metrics.mean_iou` of that one confusion, so a report row equals what
``eval_cam`` / ``eval_rw`` / ``eval_rw_irn`` / ``eval_pseudo`` / ``eval_seg`` / ``eval_single`` give for a split holding that image alone; the
sum of the rows' confusions gives their dataset figures.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.metrics import confusion_matrix, iou_per_class, mean_iou, scores_to_label

# The stages a report row can hold, in pipeline order, with their display names: AffinityNet's walk (rw)
# and IRN's (rw_irn) both refine the CAMs; "single" is the single-stage branch's prediction (eval_single),
# beside the multi-stage one (pred), not a refinement of it.
STAGES = {"cam": "CAM", "rw": "random walk", "rw_irn": "IRN walk", "pseudo": "pseudo mask", "pred": "prediction",
          "single": "single-stage prediction"}
# The multi-stage pipeline's stages, whose last scored one is a row's "final" mIoU.
PIPELINE = ("cam", "rw", "rw_irn", "pseudo", "pred")


def cam_label_map(cams: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """The CAM's label map at a background threshold: eval_cam's rule (best class if its score > t)."""
    return scores_to_label(cams, keys, threshold)


def score(label: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[np.ndarray, float | None]:
    """(confusion, mIoU or None when no class occurs) of one label map against its ground truth."""
    conf = confusion_matrix(label, gt, num_classes)
    miou = mean_iou(conf)
    return conf, (None if math.isnan(miou) else round(miou, 6))


def lineage(crf_source: str) -> dict[str, str]:
    """Which stage each stage refines: the pairs whose gain/loss a row reports (the pseudo mask refines
    what ``crf.source`` names: the CAM, AffinityNet's walk or IRN's walk)."""
    return {"rw": "cam", "rw_irn": "cam", "pseudo": crf_source if crf_source in ("rw", "rw_irn") else "cam",
            "pred": "pseudo"}


def gains(scores: dict[str, float | None], parents: dict[str, str]) -> dict[str, float]:
    """mIoU(stage) - mIoU(the stage it refines), for every pair scored on this image ("rw-cam": ...)."""
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
