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

from pathlib import Path

import torch

from pipeline.boundary import BoundaryNet
from pipeline.models.backbones import build_backbone
from stages.checkpoints import load_checkpoint, rebuilding
from stages.common import require, stage_dir
from stages.config import Params
from stages.label_map_training import train_on_label_maps


def build_boundary_net(spec: dict, pretrained) -> BoundaryNet:
    backbone = build_backbone(spec["backbone"], spec["output_stride"], pretrained=pretrained)
    # checkpoints written before train_irn.pair_set existed were trained on every pair
    return BoundaryNet(backbone, branch_channels=spec["branch_channels"], radius=spec["radius"],
                       pair_set=spec.get("pair_set", "full"))


def load_boundary_net(path: Path, device: torch.device) -> tuple[BoundaryNet, dict]:
    checkpoint = load_checkpoint(path, f"run `wsss-pipe train-irn --method {path.parent.name}` first",
                                 ("spec", "state_dict"))
    with rebuilding(path):
        model = build_boundary_net(checkpoint["spec"], pretrained=None)
        model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint


def run(params: Params) -> dict:
    cfg = params.train_irn
    label_dir = require(stage_dir(params, "ir_labels", params.method), "run `wsss-pipe ir-labels` first")
    spec = {"backbone": params.backbone.name, "output_stride": params.backbone.output_stride,
            "branch_channels": cfg.branch_channels, "radius": cfg.radius, "pair_set": cfg.pair_set}
    return train_on_label_maps(params, "train_irn", cfg, label_dir, spec, build_boundary_net)
