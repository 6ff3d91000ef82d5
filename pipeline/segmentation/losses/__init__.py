"""Losses of the single-stage branch: partial cross entropy, the dense-CRF loss (Tang et al. ECCV 2018)
and DFR's dynamic kernel with its feature-consistency loss (Zhang et al. 2021)."""
from pipeline.segmentation.losses.dense_crf import DenseCRFLoss, dense_crf_loss, gaussian_features, kernel_matrix
from pipeline.segmentation.losses.dfr import deep_features, feature_consistency_loss
from pipeline.segmentation.losses.pce import partial_cross_entropy

__all__ = [
    "DenseCRFLoss",
    "deep_features",
    "dense_crf_loss",
    "feature_consistency_loss",
    "gaussian_features",
    "kernel_matrix",
    "partial_cross_entropy",
]
