"""Stage ``rw``: random-walk propagation of the CAMs with AffinityNet's affinities (PSA).

For every train image: AffinityNet features on the grid, transition D^-1 A^beta over the sparse radius
neighbourhood, 2^logt steps of the CAM with its background channel, upsampled and
arg-maxed over background + the labelled classes. The background channel is PSA's (1 - max)^bg_alpha
(``rw.bg_mode: power``) or a constant (``threshold``; ``auto`` = eval_cam's best CAM threshold, which
adapts to how sharp a backbone's CAMs are). Writes ``outputs/rw/<method>/<id>.png`` (the label map)
and ``<id>.npz`` (the propagated scores, channel 0 = background, key 0: what ``crf.source: rw`` refines).
On CPU images run in parallel processes (one torch thread each); on CUDA, in this process.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from pipeline.data.transforms import to_image_tensor
from pipeline.io import atomic_dir, save_cam, save_mask
from pipeline.random_walk import propagate_cam
from pipeline.train import resolve_device
from stages.common import (
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
    with torch.no_grad():
        features = model(to_image_tensor(image)[None].to(device))[0]
    labels, scores = propagate_cam(cams, keys, features, beta=beta, logt=logt, radius=model.radius,
                                   image_size=image.shape[:2], **bg)
    save_mask(out_stem + ".png", labels)
    save_cam(out_stem + ".npz", np.clip(scores, 0.0, 1.0), np.concatenate([[0], keys]))


def run(params: Params) -> int:
    cfg = params.rw
    device = resolve_device(params.device)
    model_path = require(stage_dir(params, "train_aff", params.method) / "model.pt", "run `wsss-pipe train-aff` first")
    cam_dir = require(stage_dir(params, "cam", params.method), "run `wsss-pipe cam` first")
    dataset, _ = open_split(params, params.data.train_split)
    with atomic_dir(stage_dir(params, "rw", params.method)) as out:
        jobs = [(str(dataset.image_path(i)), str(Path(cam_dir) / f"{i}.npz"), str(out / i)) for i in dataset.ids]
        if cfg.bg_mode == "power":
            bg = {"bg_alpha": cfg.bg_alpha, "bg_threshold": None}
        else:
            threshold = best_cam_threshold(params) if cfg.bg_threshold == "auto" else float(cfg.bg_threshold)
            bg = {"bg_alpha": None, "bg_threshold": threshold}
        worker = partial(_walk, model_path=str(model_path), device=str(device), beta=cfg.beta, logt=cfg.logt,
                         bg=bg)
        if device.type == "cuda":
            for job in track(jobs, len(jobs), f"rw [{params.method}]"):
                worker(job)
        else:
            for _ in parallel_map(worker, jobs, num_workers(params), f"rw [{params.method}]", chunksize=8):
                pass
    _MODEL.clear()
    return len(jobs)
