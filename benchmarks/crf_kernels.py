"""Pseudo-mask mIoU of the dense CRF with PSA's and IRN's bilateral kernels, on every third MSRC train
image, from the CAMs of `bash benchmarks/msrc.sh cam-baseline`.

    python benchmarks/crf_kernels.py [cam_dir] [msrc_root]
"""
from __future__ import annotations

import sys

import numpy as np

from pipeline.cam.archive import load_cam
from pipeline.data.voc import VOCDataset
from pipeline.metrics import confusion_matrix, mean_iou
from pipeline.pseudo_masks.crf import cam_to_pseudo_mask

cam_dir = sys.argv[1] if len(sys.argv) > 1 else "bench_outputs/msrc/cam/cam"
root = sys.argv[2] if len(sys.argv) > 2 else "../shared/data/msrc_objects"
dataset = VOCDataset(root, "train")
images = [(dataset.load_image(i), *load_cam(f"{cam_dir}/{i}.npz"), dataset.load_mask(i)) for i in dataset.ids[::3]]


def evaluate(**settings) -> float:
    conf = np.zeros((dataset.num_classes,) * 2, np.int64)
    for image, cams, keys, gt in images:
        conf += confusion_matrix(cam_to_pseudo_mask(image, cams, keys, **settings), gt, dataset.num_classes)
    return mean_iou(conf)


PSA = {"bilateral_sxy": 80, "bilateral_srgb": 13}
IRN = {"bilateral_sxy": 50, "bilateral_srgb": 5}
print("| background | no CRF | CRF, PSA kernel (sxy 80, srgb 13) | CRF, IRN kernel (sxy 50, srgb 5) |")
print("|---|---|---|---|")
for threshold in (0.25, 0.30, 0.35, 0.40):
    row = [evaluate(bg_threshold=threshold, use_crf=False), evaluate(bg_threshold=threshold, **PSA),
           evaluate(bg_threshold=threshold, **IRN)]
    print(f"| threshold {threshold:.2f} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |")
for alpha in (4, 8):
    row = [evaluate(bg_mode="power", bg_alpha=alpha, use_crf=False), evaluate(bg_mode="power", bg_alpha=alpha, **PSA),
           evaluate(bg_mode="power", bg_alpha=alpha, **IRN)]
    print(f"| (1 - max)^{alpha} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |")
