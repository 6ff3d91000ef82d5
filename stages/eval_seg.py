"""Stage ``eval_seg``: val mIoU of the segmentation model, single scale and multi-scale + flip (optionally
dense-CRF post-processed), per-class IoU, and the confusion matrix as a DVC plot.

Writes ``outputs/eval_seg/<method>_<labels>/``: ``metrics.json``, ``confusion.csv`` (exact counts),
``confusion.json`` (rows of actual/predicted class names in proportion to the counts, for DVC's confusion
template) and ``pred/<id>.png`` (the final predictions as VOC-palette PNGs).
"""
from __future__ import annotations

import csv

import numpy as np

from pipeline.crf import dense_crf
from pipeline.io import atomic_dir, save_mask, write_json
from pipeline.metrics import confusion_matrix
from pipeline.segmentation import image_to_tensor, predict
from pipeline.train import resolve_device
from stages.common import iou_report, open_split, stage_dir, track
from stages.config import Params
from stages.train_seg import load_model, seg_tag

CONFUSION_ROWS = 10_000


def confusion_rows(conf: np.ndarray, class_names: list[str]) -> list[dict]:
    """About CONFUSION_ROWS (actual, predicted) rows whose counts are proportional to ``conf``."""
    shares = np.round(conf / max(conf.sum(), 1) * CONFUSION_ROWS).astype(int)
    return [{"actual": class_names[a], "predicted": class_names[p]}
            for a, p in zip(*np.nonzero(shares)) for _ in range(shares[a, p])]


def run(params: Params) -> dict:
    device = resolve_device(params.device)
    tag = seg_tag(params)
    model, checkpoint = load_model(stage_dir(params, "train_seg", tag) / "model.pt", device)
    val, index = open_split(params, params.data.val_split)
    with atomic_dir(stage_dir(params, "eval_seg", tag)) as out:
        return evaluate_model(model, val, index["classes"], params.eval_seg, params.crf.crf_kwargs(), out,
                              f"eval_seg [{tag}]", {"labels": params.train_seg.labels})


def evaluate_model(model, val, class_names: list[str], cfg, crf_kwargs: dict, out, description: str,
                   extra: dict | None = None) -> dict:
    """Single-scale and ``cfg``'s multi-scale + flip (+ CRF) mIoU of ``model`` on ``val``, written to
    ``out`` (metrics.json headed by ``extra``, confusion.json / .csv, pred/<id>.png); shared by eval_single."""
    n = len(class_names)
    single = np.zeros((n, n), dtype=np.int64)
    multi = np.zeros((n, n), dtype=np.int64)
    device = next(model.parameters()).device
    for image_id in track(val.ids, len(val.ids), description):
        image = val.load_image(image_id)
        gt = val.load_mask(image_id)
        tensor = image_to_tensor(image).to(device)
        single += confusion_matrix(predict(model, tensor).argmax(0), gt, n)
        probs = predict(model, tensor, scales=cfg.scales, flip=cfg.flip)
        if cfg.use_crf:
            probs = dense_crf(image, probs, **crf_kwargs)
        pred = probs.argmax(0).astype(np.uint8)
        multi += confusion_matrix(pred, gt, n)
        save_mask(out / "pred" / f"{image_id}.png", pred)
    report = iou_report(multi, class_names)
    metrics = {
        **(extra or {}),
        "miou": report["miou"],
        "miou_single_scale": iou_report(single, class_names)["miou"],
        "multi_scale_flip": {"scales": cfg.scales, "flip": cfg.flip, "crf": cfg.use_crf},
        "pixel_accuracy": report["pixel_accuracy"],
        "per_class_iou": report["per_class_iou"],
        "num_images": len(val.ids),
    }
    write_json(out / "metrics.json", metrics)
    write_json(out / "confusion.json", confusion_rows(multi, class_names))
    with open(out / "confusion.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actual"] + class_names)
        writer.writerows([[name] + row.tolist() for name, row in zip(class_names, multi)])
    return metrics
