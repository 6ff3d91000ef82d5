"""What the ``train_prop`` stage's networks (AffinityNet, IRN's boundary branch, ...) share: a network trained on
the per-pixel label maps of an earlier stage, with the shared trainer, resume checkpoints and torchrun."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from torch import nn

from pipeline.data.image_files import load_mask
from pipeline.data.loaders import SegmentationSamples
from pipeline.data.transforms import train_transform
from pipeline.engine import distributed
from pipeline.engine.atomic import atomic_dir, save_torch
from pipeline.engine.epochs import train_method
from pipeline.engine.runtime import resolve_device, seed_everything
from stages.common import (
    clear_resume,
    index_path,
    open_split,
    progress_bar,
    resume_path,
    run_key,
    stage_dir,
    training_loader,
)
from stages.config import Params
from stages.records import write_history, write_metrics


def train_on_label_maps(params: Params, stage: str, cfg, label_dir: Path, spec: dict,
                        build: Callable[[dict, object], nn.Module], section: str | None = None) -> dict:
    """Train ``build(spec, params.backbone.pretrained)`` on the train split with the label maps in
    ``label_dir`` (``<id>.png``) and the training section ``cfg`` (params key ``section``, default ``stage``);
    write ``outputs/<stage>/<method>/``
    (``model.pt`` with ``spec`` and the weights, ``metrics.json`` and ``details.json``, ``history.csv``,
    ``loss_terms.csv``). Returns the metrics."""
    device = resolve_device(params.device)
    generator = seed_everything(params.seed)
    dataset, _ = open_split(params, params.data.train_split)
    model = build(spec, params.backbone.pretrained)
    samples = SegmentationSamples(dataset, dataset.ids, lambda i: load_mask(label_dir / f"{i}.png"),
                                  train_transform(cfg.crop_size, cfg.scale_min, cfg.scale_max, cfg.color_jitter))
    loader = training_loader(samples, cfg, generator, device)
    key = run_key(params, ["seed", "backbone", section or stage, "data"], [index_path(params), label_dir])
    resume = resume_path(params, stage, params.method, key)
    clear_resume(resume, keep=True)  # a run with other params or inputs never resumes
    start = time.perf_counter()
    with progress_bar(f"{stage} [{params.method}]") as bar:
        task = bar.add_task("train", total=cfg.epochs * len(loader))
        history = train_method(model, loader, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               momentum=cfg.momentum, head_lr_mult=cfg.head_lr_mult, device=device, amp=cfg.amp,
                               on_step=lambda step, total: bar.update(task, completed=step),
                               resume_path=resume, resume_every=cfg.resume_every, resume_key=key,
                               name=stage, lr_param=f"{section or stage}.lr")
    metrics = {k: round(v, 6) for k, v in history[-1].items() if k != "epoch"}
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    if not distributed.is_main():
        distributed.barrier()
        return metrics
    with atomic_dir(stage_dir(params, stage, params.method)) as out:
        save_torch({"spec": spec, "state_dict": model.cpu().state_dict()}, out / "model.pt")
        write_history(out, history)
        write_metrics(out, metrics)
    clear_resume(resume)
    distributed.barrier()
    return metrics
