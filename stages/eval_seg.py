"""Stage ``eval_seg``: val mIoU of the segmentation model, single scale and multi-scale + flip (optionally
dense-CRF post-processed), per-class IoU, and the confusion matrix as a DVC plot.

The headline ``miou`` is the protocol ``eval_seg.headline`` names: ``multi_scale``, ``single_scale``, or
``best`` (the better of the two: on small images multi-scale inference can lose to single scale, e.g. on the
synthetic demo's 128 px images, 20.1 against 25.9; picking on val flatters the figure a little, so both
figures stay in metrics.json); ``protocol`` there says which it is, so `dvc metrics show` shows it.

Writes ``outputs/eval_seg/<method>_<labels>/``: ``metrics.json`` (headline figures), ``per_class.csv``,
``confusion.csv`` (exact counts), ``confusion.json`` (rows of actual/predicted class names in proportion to
the counts, for DVC's confusion template) and ``pred/<id>.png`` (the headline protocol's predictions as
VOC-palette PNGs).
"""
from __future__ import annotations

import csv
import shutil

import numpy as np

from pipeline import distributed
from pipeline.crf import dense_crf
from pipeline.io import save_mask, write_json
from pipeline.metrics import confusion_matrix
from pipeline.segmentation import image_to_tensor, predict
from pipeline.train import resolve_device
from stages.common import iou_report, open_split, shared_output, stage_dir, track, write_eval
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
    with shared_output(stage_dir(params, "eval_seg", tag)) as out:
        return evaluate_model(model, val, index["classes"], params.eval_seg, params.crf.crf_kwargs(), out,
                              f"eval_seg [{tag}]", {"labels": params.train_seg.labels})


def evaluate_model(model, val, class_names: list[str], cfg, crf_kwargs: dict, out, description: str,
                   extra: dict | None = None) -> dict:
    """Single-scale and ``cfg``'s multi-scale + flip (+ CRF) mIoU of ``model`` on ``val``, written to
    ``out`` (metrics.json headed by ``extra``, per_class.csv, confusion.json / .csv, pred/<id>.png of the
    headline protocol); shared by eval_single. Under torchrun each rank predicts its share of the images
    into the shared ``out``, the confusions are summed and rank 0 writes the rest (the others return {})."""
    n = len(class_names)
    single = np.zeros((n, n), dtype=np.int64)
    multi = np.zeros((n, n), dtype=np.int64)
    device = next(model.parameters()).device
    ids = distributed.shard(val.ids)
    for image_id in track(ids, len(ids), description):
        image = val.load_image(image_id)
        gt = val.load_mask(image_id)
        tensor = image_to_tensor(image).to(device)
        single_pred = predict(model, tensor).argmax(0).astype(np.uint8)
        single += confusion_matrix(single_pred, gt, n)
        save_mask(out / "pred_single_scale" / f"{image_id}.png", single_pred)
        probs = predict(model, tensor, scales=cfg.scales, flip=cfg.flip)
        if cfg.use_crf:
            probs = dense_crf(image, probs, **crf_kwargs)
        pred = probs.argmax(0).astype(np.uint8)
        multi += confusion_matrix(pred, gt, n)
        save_mask(out / "pred" / f"{image_id}.png", pred)
    single, multi = distributed.sum_over_ranks((single, multi))
    if not distributed.is_main():
        return {}
    reports = {"single_scale": iou_report(single, class_names), "multi_scale": iou_report(multi, class_names)}
    headline = cfg.headline
    if headline == "best":
        headline = max(reports, key=lambda k: (reports[k]["miou"], k == "multi_scale"))
    report, conf = reports[headline], {"single_scale": single, "multi_scale": multi}[headline]
    multi_name = (f"multi-scale {','.join(f'{s:g}' for s in cfg.scales)}" + (" + flip" if cfg.flip else "")
                  + (" + CRF" if cfg.use_crf else ""))
    metrics = {
        **(extra or {}),
        "miou": report["miou"],
        "protocol": "single scale" if headline == "single_scale" else multi_name,
        "miou_single_scale": reports["single_scale"]["miou"],
        "miou_multi_scale": reports["multi_scale"]["miou"],
        "pixel_accuracy": report["pixel_accuracy"],
        "per_class_iou": report["per_class_iou"],
        "num_images": len(val.ids),
    }
    if headline == "single_scale":  # pred/ holds the headline protocol's predictions
        shutil.rmtree(out / "pred", ignore_errors=True)
        (out / "pred_single_scale").rename(out / "pred")
    else:
        shutil.rmtree(out / "pred_single_scale", ignore_errors=True)
    write_eval(out, metrics)
    write_json(out / "confusion.json", confusion_rows(conf, class_names))
    with open(out / "confusion.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actual"] + class_names)
        writer.writerows([[name] + row.tolist() for name, row in zip(class_names, conf)])
    return metrics
