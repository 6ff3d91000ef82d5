"""Stage ``synthetic``: generate the built-in demo dataset (VOC layout) at ``synthetic.root``."""
from __future__ import annotations

from pathlib import Path

from pipeline.data.synthetic import generate_synthetic
from pipeline.engine.atomic import atomic_dir
from stages.config import Params


def run(params: Params) -> Path:
    cfg = params.synthetic
    with atomic_dir(cfg.root) as tmp:
        generate_synthetic(tmp, num_train=cfg.num_train, num_val=cfg.num_val, image_size=cfg.image_size,
                           seed=cfg.seed, max_objects=cfg.max_objects, object_scale=cfg.object_scale,
                           body_cue=cfg.body_cue)
    return Path(cfg.root)
