"""Stage ``cam``: multi-scale + flip CAMs of the labelled classes of every train image.

Each class map is normalised as ``cam.normalize`` says (auto: the method's own, see :mod:`pipeline.cam.readout`).
The classifier is ``train_cls``'s, or ReCAM's fine-tuned one with ``recam.enabled`` (:mod:`stages.recam`).
Writes ``outputs/cam/<method>/<id>.npz`` (see :mod:`pipeline.engine.atomic`: float16 CAMs in [0, 1] + class keys),
one directory per method so that all methods' CAMs can exist side by side. A killed run keeps its
finished CAMs (keyed work directory, :func:`stages.common.resumable_output`); under torchrun each rank
extracts ``ids[rank::world]`` and rank 0 publishes. Images are decoded ahead by ``cam.loader_workers``
processes and the CAMs compressed and written behind by ``cam.writers`` threads
(:mod:`pipeline.engine.streaming`), so the device only waits for the network.
"""
from __future__ import annotations

import numpy as np

from pipeline.cam.archive import save_cam
from pipeline.cam.readout import multiscale_cam
from pipeline.engine.runtime import resolve_device
from pipeline.engine.streaming import BackgroundWriter, stream_images
from stages.checkpoints import load_method
from stages.common import index_path, open_split, resumable_output, run_key, stage_dir, todo, track
from stages.config import Params
from stages.recam import classifier_checkpoint


def run(params: Params) -> int:
    device = resolve_device(params.device)
    checkpoint = classifier_checkpoint(params)
    method, _ = load_method(checkpoint, device)
    dataset, index = open_split(params, params.data.train_split)
    labels = index["splits"][params.data.train_split]["labels"]
    norm = params.cam.norm_for(method.readout_norm)
    key = run_key(params, ["method", "cam", "data"], [checkpoint, index_path(params)])
    with resumable_output(stage_dir(params, "cam", params.method), key) as out:
        ids = todo(dataset.ids, out, ".npz")
        images = stream_images(dataset.load_image, ids, params.cam.loader_workers, device)
        with BackgroundWriter(params.cam.writers) as writer:
            for image_id, image in track(images, len(ids), f"cam [{params.method}]"):
                keys = np.asarray(labels[image_id], dtype=np.int64)
                cams = multiscale_cam(method, image, keys - 1, params.cam.scales, params.cam.flip, norm)
                writer.submit(save_cam, out / f"{image_id}.npz", cams.cpu().numpy(), keys)
    return len(dataset.ids)
