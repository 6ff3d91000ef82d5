"""Stage ``train_irn``: IRN's class-boundary branch trained on the relation labels of ``ir_labels``.

The backbone (``backbone`` section, e.g. ImageNet weights as IRN's ResNet-50) stays frozen; only the
branch trains (jiwoon-ahn/irn ``step/train_irn.py``: SGD with poly decay, lr 0.1, weight decay 1e-4,
3 epochs, random rescale 0.5-1.5, flip, crop). Writes ``outputs/train_irn/<method>/``: ``model.pt``
(weights + what rebuilds them), ``metrics.json`` (final loss terms, wall time) and ``history.csv``.
Resumable and torchrun-ready as ``train_cls`` (``train_irn.resume_every``).

Departures from the reference:
- Momentum 0.9 (``train_irn.momentum``). IRN's ``PolyOptimizer`` means 0.9 but hands its weight decay
  to ``SGD``'s third positional argument, which is the momentum, so it trains with momentum 1e-4. With
  IRN's ~1000 steps that is harmless; with the few dozen steps of a CPU run it undertrains (24 MSRC
  images, 9 steps: random-walk mIoU 40.1 with 1e-4 vs 65.9 with 0.9). 0.9 is also what ``train_aff``
  uses for PSA's identical optimizer.
- Defaults sized for a CPU: crop 128, batch 16 (IRN 512, 32); the shared ``train_transform`` rescales
  relative to the crop size and may add colour jitter (``train_irn.color_jitter``, 0 as IRN).
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import torch

from pipeline import distributed
from pipeline.boundary import BoundaryNet
from pipeline.data.loaders import SegmentationSamples
from pipeline.data.transforms import train_transform
from pipeline.io import atomic_dir, load_mask, write_json
from pipeline.models.backbones import build_backbone
from pipeline.train import resolve_device, seed_everything, train_method
from stages.checkpoints import load_checkpoint
from stages.common import (
    clear_resume,
    index_path,
    open_split,
    progress_bar,
    require,
    resume_path,
    run_key,
    stage_dir,
    training_loader,
)
from stages.config import Params


def build_boundary_net(spec: dict, pretrained) -> BoundaryNet:
    backbone = build_backbone(spec["backbone"], spec["output_stride"], pretrained=pretrained)
    return BoundaryNet(backbone, branch_channels=spec["branch_channels"], radius=spec["radius"])


def load_boundary_net(path: Path, device: torch.device) -> tuple[BoundaryNet, dict]:
    checkpoint = load_checkpoint(path, f"run `wsss-pipe train-irn --method {path.parent.name}` first",
                                 ("spec", "state_dict"))
    model = build_boundary_net(checkpoint["spec"], pretrained=None)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint


def run(params: Params) -> dict:
    cfg = params.train_irn
    device = resolve_device(params.device)
    generator = seed_everything(params.seed)
    label_dir = require(stage_dir(params, "ir_labels", params.method), "run `wsss-pipe ir-labels` first")
    dataset, _ = open_split(params, params.data.train_split)
    spec = {"backbone": params.backbone.name, "output_stride": params.backbone.output_stride,
            "branch_channels": cfg.branch_channels, "radius": cfg.radius}
    model = build_boundary_net(spec, params.backbone.pretrained)
    samples = SegmentationSamples(dataset, dataset.ids, lambda i: load_mask(label_dir / f"{i}.png"),
                                  train_transform(cfg.crop_size, cfg.scale_min, cfg.scale_max, cfg.color_jitter))
    loader = training_loader(samples, cfg, generator, device)
    key = run_key(params, ["seed", "backbone", "train_irn", "data"], [index_path(params), label_dir])
    resume = resume_path(params, "train_irn", params.method, key)
    clear_resume(resume, keep=True)  # a run with other params or inputs never resumes
    start = time.perf_counter()
    with progress_bar(f"train_irn [{params.method}]") as bar:
        task = bar.add_task("train", total=cfg.epochs * len(loader))
        history = train_method(model, loader, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               momentum=cfg.momentum, head_lr_mult=cfg.head_lr_mult, device=device, amp=cfg.amp,
                               on_step=lambda step, total: bar.update(task, completed=step),
                               resume_path=resume, resume_every=cfg.resume_every, resume_key=key)
    metrics = {k: round(v, 6) for k, v in history[-1].items() if k != "epoch"}
    metrics["train_seconds"] = round(time.perf_counter() - start, 2)
    if not distributed.is_main():
        distributed.barrier()
        return metrics
    with atomic_dir(stage_dir(params, "train_irn", params.method)) as out:
        torch.save({"spec": spec, "state_dict": model.cpu().state_dict()}, out / "model.pt")
        with open(out / "history.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["epoch"] + [k for k in history[0] if k != "epoch"])
            writer.writeheader()
            writer.writerows(history)
        write_json(out / "metrics.json", metrics)
    clear_resume(resume)
    distributed.barrier()
    return metrics
