"""Segmentation metrics from accumulated confusion matrices, and the CAM background-threshold sweep.

Rows of a confusion matrix are ground truth, columns prediction; pixels whose ground truth is the
ignore index (255) never count.
"""
from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts of (gt, pred) pairs, void pixels of ``gt`` skipped."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    gt = gt.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    valid = gt != IGNORE_INDEX
    if np.any(gt[valid] >= num_classes):
        raise ValueError(f"ground truth has a class index >= {num_classes}")
    pred = np.where(pred[valid] == IGNORE_INDEX, 0, pred[valid])
    counts = np.bincount(gt[valid] * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU of each class; NaN for a class absent from both ground truth and prediction."""
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(conf: np.ndarray) -> float:
    """Mean IoU over the classes that occur in ground truth or prediction."""
    iou = iou_per_class(conf)
    return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")


def pixel_accuracy(conf: np.ndarray) -> float:
    total = conf.sum()
    return float(np.trace(conf) / total) if total else float("nan")


def scores_to_label(scores: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """Label map from (K, H, W) foreground scores of classes ``keys``: a pixel is background unless its
    best foreground score exceeds ``threshold`` (PSA/IRN/SEAM's evaluation rule)."""
    if scores.shape[0] == 0:
        return np.zeros(scores.shape[1:], dtype=np.uint8)
    best = scores.argmax(0)
    label = np.asarray(keys)[best]
    return np.where(scores.max(0) > threshold, label, 0).astype(np.uint8)


class ThresholdSweep:
    """Confusion matrices of CAM label maps for many background thresholds in one pass over the pixels.

    A pixel takes its best foreground class ``c`` (score ``m``) when ``m > t`` and background otherwise.
    With ``k`` = the number of thresholds below ``m``, the pixel is foreground exactly for thresholds
    0..k-1, so one histogram over (k, gt, c) plus cumulative sums gives every threshold's confusion
    matrix: O(pixels + thresholds * classes^2) instead of O(pixels * thresholds).
    """

    def __init__(self, thresholds: np.ndarray, num_classes: int):
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        if self.thresholds.ndim != 1 or np.any(np.diff(self.thresholds) <= 0):
            raise ValueError("thresholds must be a strictly increasing 1-D array")
        self.num_classes = num_classes
        n = len(self.thresholds)
        self.hist = np.zeros((n + 1, num_classes, num_classes), dtype=np.int64)

    def update(self, scores: np.ndarray, keys: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: (K, H, W) foreground scores of classes ``keys`` and its (H, W) ground truth."""
        c, n = self.num_classes, len(self.thresholds)
        valid = gt.ravel() != IGNORE_INDEX
        g = gt.ravel()[valid].astype(np.int64)
        if scores.shape[0] == 0:
            best_class = np.zeros_like(g)
            k = np.zeros_like(g)
        else:
            flat = scores.reshape(scores.shape[0], -1)[:, valid]
            best_class = np.asarray(keys, dtype=np.int64)[flat.argmax(0)]
            k = np.searchsorted(self.thresholds, flat.max(0), side="left")
        index = (k * c + g) * c + best_class
        self.hist += np.bincount(index, minlength=(n + 1) * c * c).reshape(n + 1, c, c)

    def merge(self, other: "ThresholdSweep") -> None:
        self.hist += other.hist

    def confusions(self) -> np.ndarray:
        """(num_thresholds, C, C) confusion matrices, one per threshold."""
        n = len(self.thresholds)
        # fg[i] = sum_{k > i} hist[k]: pixels still foreground at threshold i.
        fg = np.cumsum(self.hist[::-1], axis=0)[::-1][1:]
        bg_rows = np.cumsum(self.hist.sum(axis=2), axis=0)[:n]  # pixels background at threshold i, by gt
        conf = fg.copy()
        conf[:, :, 0] += bg_rows
        return conf

    def miou_curve(self) -> np.ndarray:
        return np.array([mean_iou(conf) for conf in self.confusions()])
