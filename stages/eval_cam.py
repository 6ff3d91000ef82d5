"""Stage ``eval_cam``: CAM mIoU on the train split with the background threshold swept.

Writes ``outputs/eval_cam/<method>/``: ``metrics.json`` (best threshold, its mIoU, wall time: DVC metrics),
``details.json`` (also the all-background mIoU for context), ``per_class.csv`` (per-class IoU at the best
threshold) and ``curve.csv`` (mIoU vs threshold): DVC plots. A best threshold at an end of the sweep is a
warning: the optimum may lie outside the range (widen eval_cam.threshold_min/max). CAMs are streamed from disk one image at a time, in
parallel over chunks of ids; under torchrun each rank sweeps its share of the images and rank 0 writes.
"""
from __future__ import annotations

import csv
import sys
import time

import numpy as np

from pipeline.cam.archive import load_cam
from pipeline.data.voc import VOCDataset
from pipeline.engine import distributed
from pipeline.engine.atomic import atomic_dir
from pipeline.errors import DataError
from pipeline.metrics import ThresholdSweep, iou_per_class, mean_iou
from stages.common import num_workers, open_split, parallel_map, require, stage_dir, write_eval
from stages.config import Params
from stages.protocol import cam_protocol, split_fields


def _sweep_chunk(job: tuple) -> np.ndarray:
    root, split, ids, cam_dir, thresholds, num_classes = job
    dataset = VOCDataset(root, split, labels={i: [] for i in ids})
    sweep = ThresholdSweep(thresholds, num_classes)
    for image_id in ids:
        cams, keys = load_cam(f"{cam_dir}/{image_id}.npz", num_classes)
        gt = dataset.load_mask(image_id)
        if cams.shape[1:] != gt.shape:
            raise DataError(f"{cam_dir}/{image_id}.npz: CAM size {cams.shape[1:]} differs from its mask {gt.shape}")
        sweep.update(cams, keys, gt)
    return sweep.hist


def run(params: Params) -> dict:
    start = time.perf_counter()
    cfg = params.eval_cam
    split = params.data.measured_split()
    dataset, index = open_split(params, split)
    cam_dir = require(stage_dir(params, "cam", params.method), "run `wsss-pipe cam` for this method first")
    class_names = index["classes"]
    thresholds = np.round(np.arange(cfg.threshold_min, cfg.threshold_max + 1e-9, cfg.threshold_step), 6)
    sweep = ThresholdSweep(thresholds, len(class_names))
    workers = num_workers(params)
    distributed.setup("cpu")
    ids = distributed.shard(dataset.ids)  # under torchrun: this rank's share; the histograms are summed
    chunks = [ids[i::workers * 4] for i in range(workers * 4)]
    jobs = [(str(dataset.root), split, ids, str(cam_dir), thresholds, len(class_names)) for ids in chunks if ids]
    for hist in parallel_map(_sweep_chunk, jobs, workers, f"eval_cam [{params.method}]", chunksize=1):
        sweep.hist += hist
    sweep.hist = distributed.sum_over_ranks(sweep.hist)
    if not distributed.is_main():
        return {}

    confusions = sweep.confusions()
    curve = np.array([mean_iou(conf) for conf in confusions])
    best = int(np.nanargmax(curve))
    if len(thresholds) > 1 and best in (0, len(thresholds) - 1):
        side, key = ("lowest", "threshold_min") if best == 0 else ("highest", "threshold_max")
        advice = (f"the optimum may lie beyond it (widen eval_cam.{key})" if 0.0 < thresholds[best] < 1.0 else
                  "the CAMs barely separate objects from background (train the classifier longer?)")
        print(f"warning: eval_cam [{params.method}]: the best threshold {thresholds[best]:g} is the {side} of the "
              f"sweep; {advice}", file=sys.stderr)
    iou = iou_per_class(confusions[best])
    background_only = confusions[0].copy()
    background_only[:, 0] = background_only.sum(1)
    background_only[:, 1:] = 0
    metrics = {
        "method": params.method,
        "miou": round(float(curve[best]), 6),
        "best_threshold": float(thresholds[best]),
        "all_background_miou": round(mean_iou(background_only), 6),
        "per_class_iou": {name: (None if np.isnan(v) else round(float(v), 6)) for name, v in zip(class_names, iou)},
        **split_fields(split, len(dataset.ids)),
        **cam_protocol(params),
        "seconds": round(time.perf_counter() - start, 2),
    }
    with atomic_dir(stage_dir(params, "eval_cam", params.method)) as out:
        write_eval(out, metrics)
        with open(out / "curve.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["threshold", "miou"])
            writer.writerows([[float(t), round(float(m), 6)] for t, m in zip(thresholds, curve)])
    return metrics

