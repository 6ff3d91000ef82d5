"""Stage ``aff_labels``: PSA's confident labels for AffinityNet training.

For every train image: dense CRF over the CAM with a low background alpha (confident foreground) and a
high one (confident background), both posteriors averaged over the cells of the affinity grid
(``train_aff.grid_stride``), combined by PSA's rule (:mod:`pipeline.affinity_labels`). Written at full image
resolution as ``outputs/aff_labels/<method>/<id>.png`` (VOC palette, 255 = ignore; constant on each grid
cell); training resamples them to the affinity grid. The CRF kernels are the ``aff_labels`` section's own
(PSA's label CRF), not the pseudo-mask ``crf`` section's.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from pipeline.affinity_labels import confident_labels
from pipeline.crf import dense_crf
from pipeline.io import save_mask
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


def _label_job(job: tuple[str, str, str], fg_alpha: float, bg_alpha: float, crf: dict, grid_stride: int) -> None:
    image_path, cam_path, out_path = job
    image, cams, keys = load_image_and_cam(image_path, cam_path)
    labels = confident_labels(image, cams, keys, fg_alpha=fg_alpha, bg_alpha=bg_alpha,
                              crf=partial(dense_crf, **crf), grid_stride=grid_stride)
    save_mask(out_path, labels)


def run(params: Params) -> int:
    cam_dir = require(stage_dir(params, "cam", params.method), "run `wsss-pipe cam` first")
    dataset, _ = open_split(params, params.data.train_split)
    key = run_key(params, ["method", "aff_labels", "train_aff.grid_stride", "data"],
                  [cam_dir, index_path(params)])
    with resumable_output(stage_dir(params, "aff_labels", params.method), key) as out:
        jobs = [(str(dataset.image_path(i)), str(Path(cam_dir) / f"{i}.npz"), str(out / f"{i}.png"))
                for i in todo(dataset.ids, out, ".png")]
        worker = partial(_label_job, fg_alpha=params.aff_labels.fg_alpha, bg_alpha=params.aff_labels.bg_alpha,
                         crf=params.aff_labels.crf_kwargs(), grid_stride=params.train_aff.grid_stride)
        for _ in parallel_map(worker, jobs, num_workers(params), f"aff_labels [{params.method}]"):
            pass
    return len(dataset.ids)
