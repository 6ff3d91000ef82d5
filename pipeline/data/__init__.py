"""Datasets: the VOC-layout reader, VOC + SBD ``train_aug`` preparation and the synthetic demo generator."""
from pipeline.data.sbd import (
    build_segmentation_class_aug,
    derive_train_aug,
    load_sbd_mask,
    write_train_aug,
)
from pipeline.data.synthetic import CLASS_NAMES as SYNTHETIC_CLASS_NAMES
from pipeline.data.synthetic import generate_synthetic, render_sample
from pipeline.data.voc import (
    IGNORE_INDEX,
    VOC_CLASSES,
    VOCDataset,
    compute_labels,
    mask_label_indices,
)

__all__ = [
    "IGNORE_INDEX",
    "SYNTHETIC_CLASS_NAMES",
    "VOC_CLASSES",
    "VOCDataset",
    "build_segmentation_class_aug",
    "compute_labels",
    "derive_train_aug",
    "generate_synthetic",
    "load_sbd_mask",
    "mask_label_indices",
    "render_sample",
    "write_train_aug",
]
