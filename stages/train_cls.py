"""Stage ``train_cls``: train the multi-label classifier of the selected method (cam, seam, ppl, cpn).

Writes ``outputs/train_cls/<method>/``: ``model.pt`` (weights + what rebuilds them), ``history.csv`` and
``loss_terms.csv`` (loss terms per epoch; the latter a DVC plot), ``metrics.json`` (final loss, wall time) and
``details.json`` (every final loss term). A killed run resumes
from ``outputs/.resume/train_cls/<method>/<key>.pt`` (``train_cls.resume_every``); under torchrun every
rank trains (DistributedDataParallel) and rank 0 writes.
"""
from __future__ import annotations

import time

from pipeline.cam.methods import build_method
from pipeline.data.loaders import ClassificationSamples
from pipeline.data.transforms import train_transform
from pipeline.engine import distributed
from pipeline.engine.atomic import atomic_dir
from pipeline.engine.epochs import train_method
from pipeline.engine.runtime import resolve_device, seed_everything
from pipeline.models.backbones import build_backbone
from stages.checkpoints import save_checkpoint
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


def run(params: Params) -> dict:
    cfg = params.train_cls
    device = resolve_device(params.device)
    generator = seed_everything(params.seed)
    dataset, index = open_split(params, params.data.train_split)
    num_fg = len(index["classes"]) - 1
    options = params.method_options()
    if params.backbone.name == "tiny" and not params.uses_generated_data() and distributed.is_main():
        print(f"warning: train_cls: backbone.name is tiny (the demo's small CNN, trained from scratch) on "
              f"{params.data.root}; for real photos set backbone.name=efficientnet_lite0 "
              "backbone.pretrained=imagenet, or use a recipe (recipes/)")
    backbone = build_backbone(params.backbone.name, params.backbone.output_stride, params.backbone.pretrained)
    method = build_method(params.method, backbone, num_fg, **options)

    labels = index["splits"][params.data.train_split]["labels"]
    samples = ClassificationSamples(
        dataset, dataset.ids, labels, num_fg,
        train_transform(cfg.crop_size, cfg.scale_min, cfg.scale_max, cfg.color_jitter),
    )
    loader = training_loader(samples, cfg, generator, device)
    key = run_key(params, ["seed", "method", "backbone", "train_cls", f"methods.{params.method}", "data"],
                  [index_path(params)])
    resume = resume_path(params, "train_cls", params.method, key)
    clear_resume(resume, keep=True)  # a run with other params or inputs never resumes
    start = time.perf_counter()
    with progress_bar(f"train_cls [{params.method}]") as bar:
        task = bar.add_task("train", total=cfg.epochs * len(loader))
        history = train_method(
            method, loader, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
            momentum=cfg.momentum, head_lr_mult=cfg.head_lr_mult, device=device, amp=cfg.amp,
            on_step=lambda step, total: bar.update(task, completed=step),
            freeze_bn=cfg.freezes_bn(params.backbone.pretrained, params.uses_generated_data()),
            resume_path=resume, resume_every=cfg.resume_every, resume_key=key, name="train_cls", lr_param="train_cls.lr",
        )
    seconds = time.perf_counter() - start
    metrics = {k: v for k, v in history[-1].items() if k != "epoch"} | {"seconds": round(seconds, 2)}

    if not distributed.is_main():
        distributed.barrier()
        return metrics
    with atomic_dir(stage_dir(params, "train_cls", params.method)) as out:
        save_checkpoint(
            out / "model.pt", method.cpu(), options,
            {"name": params.backbone.name, "output_stride": params.backbone.output_stride},
            index["classes"],
        )
        write_history(out, history)
        write_metrics(out, metrics)
    clear_resume(resume)
    distributed.barrier()
    return metrics
