"""Stage ``data``: validate the VOC-layout dataset at ``data.root`` and index its splits.

Every image is decoded once (in parallel), so a truncated or corrupt file fails here, naming the file,
and not in the middle of a training epoch.

Writes ``outputs/data/index.json``: the root, class names and, per split, the ids and image-level labels
(1-based class indices, derived from the masks or from Annotations/*.xml). Later stages read labels from
here instead of decoding every mask again. Also the train split's class co-occurrence
(:mod:`pipeline.report.cooccurrence`): ``cooccurrence.csv`` (per class: images, images alone, the class it
appears with most) and ``cooccurrence_pairs.csv`` (the DVC heatmap of which classes appear together).
"""
from __future__ import annotations

from pipeline.data.voc import VOCDataset, compute_labels
from pipeline.engine.atomic import atomic_dir, write_json
from pipeline.report.cooccurrence import write_cooccurrence
from stages.common import num_workers, stage_dir
from stages.config import Params


def run(params: Params) -> dict:
    workers = num_workers(params)
    splits = list(dict.fromkeys([params.data.train_split, params.data.val_split, params.train_seg.split,
                                 params.data.eval_split]))
    splits = [split for split in splits if split]
    index: dict = {"root": params.data.root, "classes": None, "splits": {}}
    for split in splits:
        dataset = VOCDataset(params.data.root, split)
        dataset.validate(workers=workers, decode_images=True)
        index["classes"] = dataset.class_names
        index["splits"][split] = {
            "ids": dataset.ids,
            "has_masks": dataset.has_masks,
            "labels": compute_labels(dataset, workers=workers),
        }
    with atomic_dir(stage_dir(params, "data")) as out:
        write_json(out / "index.json", index)
        co = write_cooccurrence(out, index["splits"][params.data.train_split]["labels"], index["classes"])
    flagged = [name for name, never in zip(co.classes, co.never_alone) if never]
    if flagged:
        print(f"data: never alone in {params.data.train_split} (their CAMs may spread to what they appear with): "
              f"{', '.join(flagged)}; see {stage_dir(params, 'data') / 'cooccurrence.csv'}")
    return index
