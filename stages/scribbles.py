"""Stage ``scribbles``: the scribble labels of every train image, one palette PNG per image in
``outputs/scribbles/`` (value = class index, 255 = unlabelled), plus ``stats.json`` (source, labelled
fraction). ``scribbles.source``: ``dataset`` reads ScribbleSup PNGs from ``<data.root>/pascal_2012_scribble``
(checked: size, class range); ``generate`` draws them from the ground truth (:mod:`pipeline.segmentation.scribbles`);
``auto`` reads them where the folder exists and generates them otherwise. Any bad file stops the stage
with a one-line error naming it, and nothing is written.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from pipeline.data.image_files import save_mask
from pipeline.data.voc import VOCDataset, image_size
from pipeline.engine.atomic import atomic_dir, write_json
from pipeline.errors import DataError
from pipeline.segmentation.scribbles import SCRIBBLE_DIR, generate_scribble, image_rng, read_scribble, scribble_dir
from stages.common import num_workers, open_split, parallel_map, stage_dir
from stages.config import Params


def resolve_source(params: Params) -> str:
    source = params.scribbles.source
    if source == "auto":
        return "dataset" if (Path(params.data.root) / SCRIBBLE_DIR).is_dir() else "generate"
    return source


def _one(image_id: str, root: str, split: str, out: str, source: str, width: int, coverage: float,
         seed: int) -> tuple[int, int]:
    dataset = VOCDataset(root, split, labels={image_id: []})
    if source == "dataset":
        shape = image_size(dataset.image_path(image_id))
        labels = read_scribble(Path(root) / SCRIBBLE_DIR / f"{image_id}.png", shape, dataset.num_classes)
    else:
        labels = generate_scribble(dataset.load_mask(image_id), width, coverage, image_rng(seed, image_id))
    save_mask(Path(out) / f"{image_id}.png", labels)
    return int((labels != 255).sum()), labels.size


def run(params: Params) -> dict:
    cfg = params.scribbles
    split = params.data.train_split
    dataset, index = open_split(params, split)
    source = resolve_source(params)
    if source == "dataset":
        scribble_dir(params.data.root)
    elif not index["splits"][split]["has_masks"]:
        raise DataError(f"{dataset.mask_dir}: scribbles.source generate needs ground-truth masks for split "
                        f"{split!r}")
    with atomic_dir(stage_dir(params, "scribbles")) as out:
        job = partial(_one, root=str(dataset.root), split=split, out=str(out), source=source,
                      width=cfg.width, coverage=cfg.coverage, seed=cfg.seed)
        counts = np.array(list(parallel_map(job, dataset.ids, num_workers(params), "scribbles")))
        stats = {"source": source, "num_images": len(dataset.ids),
                 "labelled_fraction": round(float(counts[:, 0].sum() / max(counts[:, 1].sum(), 1)), 6),
                 "images_without_scribbles": int((counts[:, 0] == 0).sum())}
        write_json(out / "stats.json", stats)
    return stats
