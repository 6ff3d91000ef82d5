"""Stage ``prop_labels <method>``: a propagation method's relation labels from the CAMs of the train split.

For every train image, :meth:`pipeline.propagation.PropagationMethod.relation_labels` (AffinityNet: PSA's
confident labels from two CRFs; IRN: the CAMs against two constant backgrounds, each refined by the label
CRF). Written at full image resolution as ``<outputs>/prop_labels/<method>/<CAM method>/<id>.png`` (VOC
palette, 255 = ignore).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from pipeline.data.image_files import save_mask
from pipeline.propagation import get_propagation
from stages.common import (
    index_path,
    load_image_and_cam,
    num_workers,
    open_split,
    parallel_map,
    require,
    resumable_output,
    run_key,
    stage_dir,
    todo,
)
from stages.config import Params
from stages.propagation import context, eval_cam_metrics, method_and_section, prop_dir


def _label_job(job: tuple[str, str, str], name: str, settings: dict) -> None:
    image_path, cam_path, out_path = job
    image, cams, keys = load_image_and_cam(image_path, cam_path)
    save_mask(out_path, get_propagation(name).relation_labels(image, cams, keys, **settings))


def run(params: Params, name: str) -> int:
    method, cfg = method_and_section(params, name)
    cam_dir = require(stage_dir(params, "cam", params.method), "run `wsss-pipe cam` first")
    dataset, _ = open_split(params, params.data.train_split)
    settings, calibrated = method.label_settings(cfg, context(params, "labels"))
    calibration = [eval_cam_metrics(params)] if calibrated else []
    key = run_key(params, ["method", f"propagation.{name}", *method.label_reads, "data"],
                  [cam_dir, index_path(params), *calibration])
    with resumable_output(prop_dir(params, "prop_labels", name), key) as out:
        jobs = [(str(dataset.image_path(i)), str(Path(cam_dir) / f"{i}.npz"), str(out / f"{i}.png"))
                for i in todo(dataset.ids, out, ".png")]
        worker = partial(_label_job, name=name, settings=settings)
        for _ in parallel_map(worker, jobs, num_workers(params), f"prop_labels {name} [{params.method}]"):
            pass
    return len(dataset.ids)
