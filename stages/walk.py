"""Stage ``walk <method>``: a propagation method's random walk of the CAMs over its network's affinities.

For every train image, :meth:`pipeline.propagation.PropagationMethod.walk` with the network ``train_prop``
wrote (AffinityNet: affinities of its feature grid, 2^logt steps, background per ``walk.bg_mode``; IRN:
affinities from the class-boundary map, 2^exp_times steps, constant background). ``auto`` backgrounds are
calibrated to eval_cam's best threshold for the CAM method. Writes
``<outputs>/walk/<method>/<CAM method>/<id>.png`` (the label map) and ``<id>.npz`` (the scores, channel 0
= background, key 0: what ``crf.source: <method>`` refines). On CPU images run in parallel processes (one
torch thread each); on CUDA, in this process.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from pipeline.cam.archive import save_cam
from pipeline.data.image_files import save_mask
from pipeline.engine.runtime import resolve_device
from pipeline.models.backbones import import_backbones
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
    track,
)
from stages.checkpoints import load_checkpoint, rebuilding
from stages.config import Params
from stages.propagation import command, context, eval_cam_metrics, method_and_section, prop_dir

_MODEL: dict = {}


def load_network(name: str, path: Path, device: torch.device):
    """Method ``name``'s trained network from ``train_prop``'s ``model.pt``, in eval mode on ``device``."""
    checkpoint = load_checkpoint(path, f"run `{command('train_prop', name)} --method {path.parent.name}` first",
                                 ("spec", "state_dict"))
    with rebuilding(path):
        model = get_propagation(name).build_network(checkpoint["spec"], None)
        model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint


def _walk(job: tuple[str, str, str], name: str, model_path: str, device: str, settings: dict) -> None:
    image_path, cam_path, out_stem = job
    key = (name, model_path, device)
    if key not in _MODEL:
        _MODEL.clear()
        _MODEL[key] = load_network(name, Path(model_path), torch.device(device))[0]
    image, cams, keys = load_image_and_cam(image_path, cam_path)
    labels, scores = get_propagation(name).walk(_MODEL[key], image, cams, keys, device, **settings)
    save_mask(out_stem + ".png", labels)
    save_cam(out_stem + ".npz", np.clip(scores, 0.0, 1.0), np.concatenate([[0], keys]))


def run(params: Params, name: str) -> int:
    method, cfg = method_and_section(params, name)
    method.import_torch_steps()  # once here, not in every worker: the walk and its network, on any backbone
    import_backbones()
    device = resolve_device(params.device)
    model_path = require(prop_dir(params, "train_prop", name) / "model.pt", f"run `{command('train_prop', name)}` first")
    cam_dir = require(stage_dir(params, "cam", params.method), "run `wsss-pipe cam` first")
    dataset, _ = open_split(params, params.data.train_split)
    settings, calibrated = method.walk_settings(cfg, context(params, "walk"))
    calibration = [eval_cam_metrics(params)] if calibrated else []
    key = run_key(params, ["method", f"propagation.{name}.walk", "data"],
                  [model_path, cam_dir, index_path(params), *calibration])
    description = f"walk {name} [{params.method}]"
    with resumable_output(prop_dir(params, "walk", name), key) as out:
        jobs = [(str(dataset.image_path(i)), str(Path(cam_dir) / f"{i}.npz"), str(out / i))
                for i in todo(dataset.ids, out, ".npz")]  # .npz is written after the .png
        worker = partial(_walk, name=name, model_path=str(model_path), device=str(device), settings=settings)
        if device.type == "cuda":
            for job in track(jobs, len(jobs), description):
                worker(job)
        else:
            for _ in parallel_map(worker, jobs, num_workers(params), description, chunksize=8):
                pass
    _MODEL.clear()
    return len(dataset.ids)
