"""Stage ``train_aff``: AffinityNet (PSA) trained on the confident labels of ``aff_labels``.

Writes ``outputs/train_aff/<method>/``: ``model.pt`` (weights + what rebuilds them), ``metrics.json``
(final loss terms, wall time) and ``history.csv`` (loss terms per epoch). Resumable and torchrun-ready as
``train_cls`` (``train_aff.resume_every``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.affinity import AffinityNet
from pipeline.models.backbones import build_backbone
from stages.checkpoints import load_checkpoint, rebuilding
from stages.common import require, stage_dir
from stages.config import Params
from stages.label_map_training import train_on_label_maps


def build_affinity_net(spec: dict, pretrained) -> AffinityNet:
    backbone = build_backbone(spec["backbone"], spec["output_stride"], pretrained=pretrained)
    # checkpoints written before train_aff.pair_set existed were trained (and are walked) on every pair
    return AffinityNet(backbone, embed_dim=spec["embed_dim"], grid_stride=spec["grid_stride"], radius=spec["radius"],
                       pair_set=spec.get("pair_set", "full"))


def load_affinity_net(path: Path, device: torch.device) -> tuple[AffinityNet, dict]:
    checkpoint = load_checkpoint(path, f"run `wsss-pipe train-aff --method {path.parent.name}` first",
                                 ("spec", "state_dict"))
    with rebuilding(path):
        model = build_affinity_net(checkpoint["spec"], pretrained=None)
        model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint


def run(params: Params) -> dict:
    cfg = params.train_aff
    label_dir = require(stage_dir(params, "aff_labels", params.method), "run `wsss-pipe aff-labels` first")
    spec = {"backbone": params.backbone.name, "output_stride": params.backbone.output_stride,
            "embed_dim": cfg.embed_dim, "grid_stride": cfg.grid_stride, "radius": cfg.radius,
            "pair_set": cfg.pair_set}
    return train_on_label_maps(params, "train_aff", cfg, label_dir, spec, build_affinity_net)
