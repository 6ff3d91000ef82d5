"""Mask evaluation shared by the eval stages: confusion over a directory of PNGs, IoU report, metrics
and per-class CSV."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from stages.common.pools import parallel_map


def _confusion_chunk(job: tuple) -> tuple[np.ndarray, int, int]:
    root, split, ids, mask_dir, num_classes = job
    from pipeline.data.image_files import load_mask
    from pipeline.data.voc import VOCDataset
    from pipeline.metrics import confusion_matrix

    dataset = VOCDataset(root, split, labels={i: [] for i in ids})
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    ignored = total = 0
    for image_id in ids:
        pred = load_mask(Path(mask_dir) / f"{image_id}.png")
        gt = dataset.load_mask(image_id)
        if pred.shape != gt.shape:
            raise DataError(f"{mask_dir}/{image_id}.png: size {pred.shape} differs from its ground truth {gt.shape}")
        conf += confusion_matrix(pred, gt, num_classes)
        ignored += int((pred == 255).sum())
        total += pred.size
    return conf, ignored, total


def evaluate_mask_dir(dataset, mask_dir: Path, num_classes: int, workers: int,
                      description: str) -> tuple[np.ndarray, float]:
    """Confusion matrix of the palette PNGs in ``mask_dir`` against ``dataset``'s ground truth, and the
    fraction of predicted pixels left as ignore (255, counted as background in the confusion). Under
    torchrun each rank reads its shard and every rank gets the totals."""
    from pipeline.engine import distributed

    distributed.setup("cpu")
    ids = distributed.shard(dataset.ids)
    chunks = [ids[i::workers * 4] for i in range(workers * 4)]
    jobs = [(str(dataset.root), dataset.split, ids, str(mask_dir), num_classes) for ids in chunks if ids]
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    ignored = total = 0
    for part, part_ignored, part_total in parallel_map(_confusion_chunk, jobs, workers, description, chunksize=1):
        conf += part
        ignored += part_ignored
        total += part_total
    conf, ignored, total = distributed.sum_over_ranks((conf, ignored, total))
    return conf, ignored / max(total, 1)


def iou_report(conf: np.ndarray, class_names: list[str]) -> dict:
    """mIoU, pixel accuracy and per-class IoU (null for classes absent from ground truth and prediction)."""
    from pipeline.metrics import iou_per_class, mean_iou, pixel_accuracy

    iou = iou_per_class(conf)
    return {
        "miou": round(mean_iou(conf), 6),
        "pixel_accuracy": round(pixel_accuracy(conf), 6),
        "per_class_iou": {n: (None if np.isnan(v) else round(float(v), 6)) for n, v in zip(class_names, iou)},
    }


def write_eval(out: Path, metrics: dict) -> None:
    """:func:`write_metrics` of an evaluation and ``per_class.csv`` (class, iou) with
    ``metrics["per_class_iou"]``, for the report and `dvc plots` (per-class IoU is never in the metrics)."""
    import csv

    from pipeline.engine.atomic import atomic_path
    from stages.records import write_metrics

    write_metrics(out, {k: v for k, v in metrics.items() if k != "per_class_iou"})
    with atomic_path(out / "per_class.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "iou"])
        writer.writerows([[name, "" if iou is None else iou] for name, iou in metrics["per_class_iou"].items()])
