"""Stage ``eval_seg``: val mIoU of the segmentation model, single scale and multi-scale + flip (optionally
dense-CRF post-processed), per-class IoU, and the confusion matrix as a DVC plot.

With ``eval_seg.use_crf`` (default, as PSA, IRN and SEAM report their DeepLab figures) the multi-scale
prediction is also post-processed by the dense CRF with the ``crf`` section's kernels, a third protocol.
The headline ``miou`` is the protocol ``eval_seg.headline`` names: ``single_scale``, ``multi_scale``,
``multi_scale_crf``, or ``best`` (the best of those computed: on small images multi-scale inference can lose
to single scale, e.g. on the synthetic demo's small images (benchmarks/README.md), and the CRF helps a model
trained on pseudo masks more than one trained on real masks; picking on val flatters the figure a little,
so every protocol's figure stays in details.json); ``protocol`` in metrics.json says which it is
(``protocol_description`` in details.json spells out its scales), so `dvc metrics show` shows it.

Writes ``outputs/eval_seg/<method>_<labels>/``: ``metrics.json`` (headline figures), ``details.json`` (every
figure), ``per_class.csv``, ``confusion.csv`` (exact counts), ``confusion.json`` (one row per actual/predicted
class pair with its count and its share of the actual class, for ``.dvc/plots/confusion_share.json``) and
``pred/<id>.png`` (the headline protocol's predictions as VOC-palette PNGs).
"""
from __future__ import annotations

import csv
import shutil
import time

import numpy as np

from pipeline.data.image_files import save_mask
from pipeline.engine import distributed
from pipeline.engine.atomic import write_json
from pipeline.engine.runtime import resolve_device
from pipeline.metrics import confusion_matrix
from pipeline.pseudo_masks.crf import dense_crf
from pipeline.segmentation.inference import image_to_tensor, predict
from stages.common import iou_report, open_split, shared_output, stage_dir, track, write_eval
from stages.config import Params
from stages.protocol import scales_text
from stages.segmentation_models import load_model, seg_tag

def confusion_rows(conf: np.ndarray, class_names: list[str]) -> list[dict]:
    """One row per (actual, predicted) class pair, in class order, zeros included (so that the plot shows
    every class on both axes): its pixel count and its share of the actual class's pixels (0 for a class
    absent from the ground truth). ``.dvc/plots/confusion_share.json`` draws it."""
    totals = conf.sum(1, keepdims=True)
    shares = np.divide(conf, totals, out=np.zeros(conf.shape), where=totals > 0)
    return [{"actual": class_names[a], "predicted": class_names[p], "pixels": int(conf[a, p]),
             "share": round(float(shares[a, p]), 4)}
            for a in range(len(class_names)) for p in range(len(class_names))]


def run(params: Params) -> dict:
    return evaluate_trained(params, "train_seg", "eval_seg", seg_tag(params), load_model, params.eval_seg,
                            lambda checkpoint: {"labels": params.train_seg.labels})


def evaluate_trained(params: Params, trained: str, stage: str, tag: str, load, cfg, extra) -> dict:
    """The run of eval_seg and eval_single: the model that stage ``trained`` wrote under ``tag`` (read by
    ``load``) evaluated on the val split with ``cfg`` (:func:`evaluate_model`) into ``stage``'s directory;
    ``extra(checkpoint)`` heads metrics.json, then the split."""
    device = resolve_device(params.device)
    model, checkpoint = load(stage_dir(params, trained, tag) / "model.pt", device)
    val, index = open_split(params, params.data.val_split)
    with shared_output(stage_dir(params, stage, tag)) as out:
        return evaluate_model(model, val, index["classes"], cfg, params.crf.crf_kwargs(), out, f"{stage} [{tag}]",
                              extra(checkpoint) | {"split": params.data.val_split})


def evaluate_model(model, val, class_names: list[str], cfg, crf_kwargs: dict, out, description: str,
                   extra: dict | None = None) -> dict:
    """Single-scale and ``cfg``'s multi-scale + flip (+ CRF) mIoU of ``model`` on ``val``, written to
    ``out`` (metrics.json headed by ``extra``, per_class.csv, confusion.json / .csv, pred/<id>.png of the
    headline protocol); shared by eval_single. Under torchrun each rank predicts its share of the images
    into the shared ``out``, the confusions are summed and rank 0 writes the rest (the others return {})."""
    start = time.perf_counter()
    n = len(class_names)
    protocols = ["single_scale", "multi_scale"] + (["multi_scale_crf"] if cfg.use_crf else [])
    confusions = {name: np.zeros((n, n), dtype=np.int64) for name in protocols}
    device = next(model.parameters()).device
    ids = distributed.shard(val.ids)
    for image_id in track(ids, len(ids), description):
        image = val.load_image(image_id)
        gt = val.load_mask(image_id)
        tensor = image_to_tensor(image).to(device)
        probs = {"single_scale": predict(model, tensor)}
        probs["multi_scale"] = predict(model, tensor, scales=cfg.scales, flip=cfg.flip)
        if cfg.use_crf:
            probs["multi_scale_crf"] = dense_crf(image, probs["multi_scale"], **crf_kwargs)
        for name in protocols:
            pred = probs[name].argmax(0).astype(np.uint8)
            confusions[name] += confusion_matrix(pred, gt, n)
            save_mask(out / f"pred_{name}" / f"{image_id}.png", pred)
    confusions = dict(zip(protocols, distributed.sum_over_ranks(tuple(confusions[k] for k in protocols))))
    if not distributed.is_main():
        return {}
    reports = {name: iou_report(confusions[name], class_names) for name in protocols}
    headline = cfg.headline
    if headline == "best":  # ties go to the later (fuller) protocol
        headline = max(reversed(protocols), key=lambda k: reports[k]["miou"])
    report = reports[headline]
    multi_name = scales_text(cfg.scales, cfg.flip)
    names = {"single_scale": "single scale", "multi_scale": multi_name, "multi_scale_crf": multi_name + " + CRF"}
    metrics = {
        **(extra or {}),
        "miou": report["miou"],
        "protocol": headline,
        "protocol_description": names[headline],
        **{f"miou_{name}": reports[name]["miou"] for name in protocols},
        "pixel_accuracy": report["pixel_accuracy"],
        "per_class_iou": report["per_class_iou"],
        "num_images": len(val.ids),
        "seconds": round(time.perf_counter() - start, 2),
    }
    shutil.rmtree(out / "pred", ignore_errors=True)  # pred/ holds the headline protocol's predictions
    (out / f"pred_{headline}").rename(out / "pred")
    for name in protocols:
        shutil.rmtree(out / f"pred_{name}", ignore_errors=True)
    conf = confusions[headline]
    write_eval(out, metrics)
    write_json(out / "confusion.json", confusion_rows(conf, class_names))
    with open(out / "confusion.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actual"] + class_names)
        writer.writerows([[name] + row.tolist() for name, row in zip(class_names, conf)])
    return metrics
