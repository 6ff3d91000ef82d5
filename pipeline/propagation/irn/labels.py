"""IRN's inter-pixel relation labels from CAMs (Ahn, Cho & Kwak, CVPR 2019;
jiwoon-ahn/irn ``step/cam_to_ir_label.py``).

Two label maps are made by an argmax over the CAMs against a constant background score: with a high
constant (``fg_threshold``, IRN 0.30) only strong activations win, so what is foreground is confident
foreground; with a low one (``bg_threshold``, IRN 0.05) only weak activations lose, so what is background
is confident background. Each map is refined by IRN's label CRF (:func:`pipeline.pseudo_masks.crf.dense_crf_labels`:
the given label at probability 0.7, bilateral sxy 50 / srgb 5). A pixel takes the high-threshold map's
class where that is foreground, is background where both maps say background, and is ignored (255) where
only the high-threshold map says background.

The combination rule is IRN's (a foreground pixel of the high-threshold map keeps its class even where the
low-threshold map disagrees). Departure: IRN's 0.30 / 0.05 belong to IRN's CAMs, whose best background
threshold is 0.15 (its ``cam_eval_thres``); CAMs cut best elsewhere get the thresholds at the same place
relative to their own best threshold t (:func:`calibrated_thresholds`: t^(ln 0.30 / ln 0.15) and
t^(ln 0.05 / ln 0.15), which give back 0.30 / 0.05 at t = 0.15). With IRN's constants our CAMs (best cut far above 0.15)
call much of the background confident foreground, the boundary branch learns no boundary there, and
training it longer made the walk worse (benchmarks/README.md, Propagation).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.errors import ConfigError, DataError
from pipeline.propagation.label_inputs import IGNORE, checked_label_inputs


LabelCrfFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


# IRN's thresholds and the CAM evaluation threshold they were chosen with (irn/run_sample.py)
IRN_FG, IRN_BG, IRN_CAM_THRESHOLD = 0.30, 0.05, 0.15


def calibrated_thresholds(cam_threshold: float) -> tuple[float, float]:
    """(fg, bg) thresholds for CAMs whose best background threshold is ``cam_threshold``: IRN's 0.30 / 0.05
    moved as the power that carries IRN's 0.15 to ``cam_threshold`` (IRN's own values at 0.15)."""
    if not 0.0 < cam_threshold < 1.0:
        raise ConfigError(f"propagation.irn.labels: the CAM threshold to calibrate from must lie in (0, 1), got {cam_threshold}")
    return (cam_threshold ** (np.log(IRN_FG) / np.log(IRN_CAM_THRESHOLD)),
            cam_threshold ** (np.log(IRN_BG) / np.log(IRN_CAM_THRESHOLD)))


def _default_crf() -> LabelCrfFn:
    from pipeline.pseudo_masks.crf import dense_crf_labels

    return dense_crf_labels


def relation_labels(image: np.ndarray, cams: np.ndarray, keys: np.ndarray, fg_threshold: float = 0.30,
                    bg_threshold: float = 0.05, crf: LabelCrfFn | None = None) -> np.ndarray:
    """Relation label map (H, W) uint8 at image resolution: 0 confident background, ``keys[k]`` confident
    foreground of the k-th labelled class, 255 ignore.

    ``image`` (H, W, 3) uint8; ``cams`` (K, H, W) in [0, 1] of the image's K labelled classes ``keys``
    (1-based class indices); ``crf(image, labels, num_labels) -> labels`` refines a hard map with values in
    [0, K] (default :func:`pipeline.pseudo_masks.crf.dense_crf_labels`, IRN's settings; ``functools.partial`` changes
    them). An image without labelled classes is all background.
    """
    image, cams, keys = checked_label_inputs("relation_labels", image, cams, keys)
    if not 0.0 <= bg_threshold < fg_threshold <= 1.0:
        raise ConfigError(f"propagation.irn.labels.fg_threshold/bg_threshold: need 0 <= bg_threshold < fg_threshold <= 1, "
                          f"got {fg_threshold}, {bg_threshold}")
    if keys.size == 0:
        return np.zeros(cams.shape[1:], dtype=np.uint8)
    if crf is None:
        crf = _default_crf()

    lookup = np.concatenate([[0], keys]).astype(np.uint8)
    refined = []
    for threshold in (fg_threshold, bg_threshold):
        background = np.full((1,) + cams.shape[1:], threshold, dtype=np.float32)
        hard = np.concatenate([background, cams], axis=0).argmax(axis=0)
        labels = np.asarray(crf(image, hard, keys.size + 1))
        if labels.shape != hard.shape:
            raise DataError(f"relation_labels: crf returned shape {labels.shape}, expected {hard.shape}")
        refined.append(lookup[labels])
    fg_conf, bg_conf = refined
    out = fg_conf.copy()
    out[fg_conf == 0] = IGNORE
    out[(fg_conf == 0) & (bg_conf == 0)] = 0
    return out
