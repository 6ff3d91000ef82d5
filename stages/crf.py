"""Stage ``crf``: dense-CRF pseudo masks for every train image, in parallel over images.

Reads the CAMs (``crf.source: cam``) or the walk scores of a propagation method (``crf.source:
affinitynet``, ``irn``, any registered one: :mod:`pipeline.propagation`) of the selected CAM method; only the image's labelled classes + background take part. Writes ``outputs/crf/<method>/<id>.png``
(VOC palette; 255 = ignore for pixels whose posterior is below ``crf.confidence``). A killed run keeps
its finished masks; under torchrun each rank takes ``ids[rank::world]`` (:func:`stages.common.todo`).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from pipeline.data.image_files import save_mask
from pipeline.engine.atomic import read_json
from pipeline.pseudo_masks.crf import cam_to_pseudo_mask, scores_to_pseudo_mask
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


def _pseudo_mask(job: tuple[str, str, str], source: str, bg: dict, crf: dict, num_classes: int) -> None:
    image_path, scores_path, out_path = job
    image, scores, keys = load_image_and_cam(image_path, scores_path, num_classes)
    if source != "cam":  # a walk's scores: background is channel 0 (key 0)
        mask = scores_to_pseudo_mask(image, scores, keys[1:], **crf)
    else:
        mask = cam_to_pseudo_mask(image, scores, keys, **bg, **crf)
    save_mask(out_path, mask)


def best_cam_threshold(params: Params) -> float:
    """The background threshold at which ``eval_cam`` found this method's CAMs best (for ``auto``)."""
    path = stage_dir(params, "eval_cam", params.method) / "metrics.json"
    require(path, "a bg_threshold is auto: run `wsss-pipe eval-cam` first or give a number")
    return float(read_json(path)["best_threshold"])


def run(params: Params) -> int:
    cfg = params.crf
    from stages.propagation import command, source_dir as source_path

    source_dir = require(source_path(params, cfg.source),
                         "run `wsss-pipe cam` first" if cfg.source == "cam" else f"run `{command('walk', cfg.source)}` first")
    dataset, index = open_split(params, params.data.train_split)
    bg = {"bg_mode": cfg.bg_mode, "bg_alpha": cfg.bg_alpha}
    if cfg.source == "cam" and cfg.bg_mode == "threshold":
        bg["bg_threshold"] = (best_cam_threshold(params) if cfg.bg_threshold == "auto"
                              else float(cfg.bg_threshold))
    crf = {"use_crf": cfg.use_crf, "confidence": cfg.confidence} | cfg.crf_kwargs()
    inputs = [source_dir, index_path(params)]
    if cfg.source == "cam" and cfg.bg_mode == "threshold" and cfg.bg_threshold == "auto":
        inputs.append(stage_dir(params, "eval_cam", params.method) / "metrics.json")
    key = run_key(params, ["method", "crf", "data"], inputs)
    with resumable_output(stage_dir(params, "crf", params.method), key) as out:
        jobs = [(str(dataset.image_path(i)), str(Path(source_dir) / f"{i}.npz"), str(out / f"{i}.png"))
                for i in todo(dataset.ids, out, ".png")]
        worker = partial(_pseudo_mask, source=cfg.source, bg=bg, crf=crf, num_classes=len(index["classes"]))
        for _ in parallel_map(worker, jobs, num_workers(params), f"crf [{params.method}]"):
            pass
    return len(dataset.ids)
