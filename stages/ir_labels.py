"""Stage ``ir_labels``: IRN's inter-pixel relation labels for training the boundary branch.

For every train image: the CAMs against a constant background of ``ir_labels.fg_threshold`` (confident
foreground) and of ``ir_labels.bg_threshold`` (confident background), each argmax refined by IRN's label
CRF (kernels from the ``crf`` section, ``ir_labels.gt_prob``); pixels in between are ignored
(:func:`pipeline.irn_labels.relation_labels`). ``auto`` (the default of both thresholds) places IRN's
0.30 / 0.05 relative to eval_cam's best threshold for the method
(:func:`pipeline.irn_labels.calibrated_thresholds`). Written at full image resolution as
``outputs/ir_labels/<method>/<id>.png`` (VOC palette, 255 = ignore).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from pipeline.crf import dense_crf_labels
from pipeline.io import save_mask
from pipeline.irn_labels import calibrated_thresholds, relation_labels
from stages.common import (
    index_path,
    resumable_output,
    run_key,
    todo,
    load_image_and_cam,
    num_workers,
    open_split,
    parallel_map,
    require,
    stage_dir,
)
from stages.config import Params
from stages.crf import best_cam_threshold
from stages.rw import eval_cam_metrics


def _label_job(job: tuple[str, str, str], fg_threshold: float, bg_threshold: float, crf: dict) -> None:
    image_path, cam_path, out_path = job
    image, cams, keys = load_image_and_cam(image_path, cam_path)
    labels = relation_labels(image, cams, keys, fg_threshold=fg_threshold, bg_threshold=bg_threshold,
                             crf=partial(dense_crf_labels, **crf))
    save_mask(out_path, labels)


def run(params: Params) -> int:
    cfg = params.ir_labels
    cam_dir = require(stage_dir(params, "cam", params.method), "run `wsss-pipe cam` first")
    dataset, _ = open_split(params, params.data.train_split)
    auto = cfg.fg_threshold == "auto"
    fg, bg = calibrated_thresholds(best_cam_threshold(params)) if auto else (cfg.fg_threshold, cfg.bg_threshold)
    calibration = [eval_cam_metrics(params)] if auto else []
    key = run_key(params, ["method", "ir_labels", "crf", "data"], [cam_dir, index_path(params), *calibration])
    with resumable_output(stage_dir(params, "ir_labels", params.method), key) as out:
        jobs = [(str(dataset.image_path(i)), str(Path(cam_dir) / f"{i}.npz"), str(out / f"{i}.png"))
                for i in todo(dataset.ids, out, ".png")]
        worker = partial(_label_job, fg_threshold=float(fg), bg_threshold=float(bg),
                         crf={"gt_prob": cfg.gt_prob} | params.crf.crf_kwargs())
        for _ in parallel_map(worker, jobs, num_workers(params), f"ir_labels [{params.method}]"):
            pass
    return len(dataset.ids)
