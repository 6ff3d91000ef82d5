"""Stage ``rw``: random-walk propagation of the CAMs with AffinityNet's affinities (PSA).

For every train image: the image padded to a multiple of the grid stride (with the colour the backbone
normalises to 0, as PSA pads its normalised input with zeros), AffinityNet features on the grid, transition
D^-1 A^beta over the pairs the model was trained on (``train_aff.radius``, ``train_aff.pair_set``), 2^logt
steps of the grid-pooled CAM, upsampled, cropped and arg-maxed over background + the labelled classes. The
background follows ``rw.bg_mode`` (:mod:`pipeline.random_walk`): ``psa`` walks (1 - max)^bg_alpha with the
classes, ``irn`` walks the classes alone, divides them by their maximum and adds the constant
``bg_threshold`` (IRN 0.25). ``auto`` (the default of both) calibrates them to eval_cam's best threshold for the method. Writes ``outputs/rw/<method>/<id>.png`` (the label map)
and ``<id>.npz`` (the propagated scores, channel 0 = background, key 0: what ``crf.source: rw`` refines).
On CPU images run in parallel processes (one torch thread each); on CUDA, in this process.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from pipeline.data.transforms import to_image_tensor
from pipeline.io import save_cam, save_mask
from pipeline.random_walk import alpha_for_threshold, input_fill, pad_to_stride, propagate_cam
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
from stages.train_aff import load_affinity_net

_MODEL: dict = {}


def _walk(job: tuple[str, str, str], model_path: str, device: str, beta: float, logt: int, bg: dict) -> None:
    image_path, cam_path, out_stem = job
    key = (model_path, device)
    if key not in _MODEL:
        _MODEL.clear()
        _MODEL[key] = load_affinity_net(Path(model_path), torch.device(device))[0]
    model = _MODEL[key]
    image, cams, keys = load_image_and_cam(image_path, cam_path)
    stride = model.grid_stride
    with torch.no_grad():
        padded = pad_to_stride(to_image_tensor(image), stride, input_fill(model.backbone.normalize, device))
        features = model(padded[None].to(device))[0]
    labels, scores = propagate_cam(cams, keys, features, beta=beta, logt=logt, radius=model.radius,
                                   grid_stride=stride, pair_set=model.pair_set, **bg)
    save_mask(out_stem + ".png", labels)
    save_cam(out_stem + ".npz", np.clip(scores, 0.0, 1.0), np.concatenate([[0], keys]))


def eval_cam_metrics(params: Params) -> Path:
    return stage_dir(params, "eval_cam", params.method) / "metrics.json"


def walk_background(params: Params) -> dict:
    """``propagate_cam``'s background arguments, with ``auto`` resolved from eval_cam's best threshold t:
    psa's power crosses the CAM at t (:func:`~pipeline.random_walk.alpha_for_threshold`), irn's constant
    is t."""
    cfg = params.rw
    needed = cfg.bg_alpha if cfg.bg_mode == "psa" else cfg.bg_threshold
    threshold = best_cam_threshold(params) if needed == "auto" else None
    alpha = alpha_for_threshold(threshold) if cfg.bg_alpha == "auto" and threshold is not None else cfg.bg_alpha
    constant = threshold if cfg.bg_threshold == "auto" and threshold is not None else cfg.bg_threshold
    if cfg.bg_mode == "psa":
        return {"bg_mode": "psa", "bg_alpha": float(alpha)}
    return {"bg_mode": "irn", "bg_threshold": float(constant)}


def run(params: Params) -> int:
    cfg = params.rw
    device = resolve_device(params.device)
    model_path = require(stage_dir(params, "train_aff", params.method) / "model.pt", "run `wsss-pipe train-aff` first")
    cam_dir = require(stage_dir(params, "cam", params.method), "run `wsss-pipe cam` first")
    dataset, _ = open_split(params, params.data.train_split)
    calibration = [eval_cam_metrics(params)] if "auto" in (cfg.bg_alpha, cfg.bg_threshold) else []
    key = run_key(params, ["method", "rw", "data"], [model_path, cam_dir, index_path(params), *calibration])
    with resumable_output(stage_dir(params, "rw", params.method), key) as out:
        jobs = [(str(dataset.image_path(i)), str(Path(cam_dir) / f"{i}.npz"), str(out / i))
                for i in todo(dataset.ids, out, ".npz")]  # .npz is written after the .png
        bg = walk_background(params)
        worker = partial(_walk, model_path=str(model_path), device=str(device), beta=cfg.beta, logt=cfg.logt,
                         bg=bg)
        if device.type == "cuda":
            for job in track(jobs, len(jobs), f"rw [{params.method}]"):
                worker(job)
        else:
            for _ in parallel_map(worker, jobs, num_workers(params), f"rw [{params.method}]", chunksize=8):
                pass
    _MODEL.clear()
    return len(dataset.ids)
