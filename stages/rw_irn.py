"""Stage ``rw_irn``: IRN's random walk of the CAMs with affinities from the class-boundary map.

For every train image: the boundary map of ``train_irn``'s branch at stride 4 (mean logit of the image
and its mirror image, ``rw_irn.flip``), affinities 1 - max boundary on the path within ``rw_irn.radius``,
2^exp_times steps of the boundary-gated CAM, upsampled, divided by the maximum, and arg-maxed against the
constant background ``rw_irn.bg_threshold`` (:func:`pipeline.irn_walk.propagate_boundary`; ``auto``, the
default: eval_cam's best threshold for the method, as in ``rw``). Writes
``outputs/rw_irn/<method>/<id>.png`` (the label map) and ``<id>.npz`` (the scores, channel 0 =
background, key 0: what ``crf.source: rw_irn`` refines). On CPU images run in parallel processes (one
torch thread each); on CUDA, in this process.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from pipeline.data.transforms import to_image_tensor
from pipeline.io import save_cam, save_mask
from pipeline.irn_walk import propagate_boundary
from pipeline.train import resolve_device
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
    track,
)
from stages.config import Params
from stages.crf import best_cam_threshold
from stages.rw import eval_cam_metrics
from stages.train_irn import load_boundary_net

_MODEL: dict = {}


def _walk(job: tuple[str, str, str], model_path: str, device: str, walk: dict, flip: bool) -> None:
    image_path, cam_path, out_stem = job
    key = (model_path, device)
    if key not in _MODEL:
        _MODEL.clear()
        _MODEL[key] = load_boundary_net(Path(model_path), torch.device(device))[0]
    image, cams, keys = load_image_and_cam(image_path, cam_path)
    boundary = _MODEL[key].boundary(to_image_tensor(image).to(device), flip=flip)
    labels, scores = propagate_boundary(cams, keys, boundary, image_size=image.shape[:2], **walk)
    save_mask(out_stem + ".png", labels)
    save_cam(out_stem + ".npz", np.clip(scores, 0.0, 1.0), np.concatenate([[0], keys]))


def run(params: Params) -> int:
    cfg = params.rw_irn
    device = resolve_device(params.device)
    model_path = require(stage_dir(params, "train_irn", params.method) / "model.pt", "run `wsss-pipe train-irn` first")
    cam_dir = require(stage_dir(params, "cam", params.method), "run `wsss-pipe cam` first")
    dataset, _ = open_split(params, params.data.train_split)
    auto = cfg.bg_threshold == "auto"
    walk = {"beta": cfg.beta, "exp_times": cfg.exp_times, "radius": cfg.radius,
            "bg_threshold": best_cam_threshold(params) if auto else cfg.bg_threshold}
    calibration = [eval_cam_metrics(params)] if auto else []
    key = run_key(params, ["method", "rw_irn", "data"], [model_path, cam_dir, index_path(params), *calibration])
    with resumable_output(stage_dir(params, "rw_irn", params.method), key) as out:
        jobs = [(str(dataset.image_path(i)), str(Path(cam_dir) / f"{i}.npz"), str(out / i))
                for i in todo(dataset.ids, out, ".npz")]  # .npz is written after the .png
        worker = partial(_walk, model_path=str(model_path), device=str(device), walk=walk, flip=cfg.flip)
        if device.type == "cuda":
            for job in track(jobs, len(jobs), f"rw_irn [{params.method}]"):
                worker(job)
        else:
            for _ in parallel_map(worker, jobs, num_workers(params), f"rw_irn [{params.method}]", chunksize=8):
                pass
    _MODEL.clear()
    return len(dataset.ids)
