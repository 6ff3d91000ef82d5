"""Stage ``eval_pseudo``: quality of the pseudo masks on the train split (the standard WSSS figure).

Writes ``outputs/eval_pseudo/<method>/``: ``metrics.json`` (mIoU, wall time), ``details.json`` (also pixel
accuracy, the image count and the fraction of pixels left as ignore, counted as background in the IoU as a
segmentation model sees them nowhere) and ``per_class.csv``: the per-class IoU (a DVC plot; kept out of
the metrics so that `dvc metrics show` stays narrow).
"""
from __future__ import annotations

import time
from pathlib import Path

from pipeline.engine import distributed
from pipeline.engine.atomic import atomic_dir
from stages.common import (
    evaluate_mask_dir,
    iou_report,
    num_workers,
    open_split,
    require,
    stage_dir,
    write_eval,
)
from stages.config import Params
from stages.protocol import pseudo_protocol, split_fields


def evaluate(params: Params, stage: str) -> dict:
    """Score the label maps of ``outputs/<stage>/<method>/`` (``crf``)."""
    return evaluate_dir(params, stage_dir(params, stage, params.method), f"wsss-pipe {stage.replace('_', '-')}", stage,
                        pseudo_protocol(params))


def evaluate_dir(params: Params, mask_dir: Path, command: str, label: str, protocol: dict) -> dict:
    """Score the label maps in ``mask_dir`` (written by ``command``) on the measured split; ``protocol``: how
    they were made (:mod:`stages.protocol`)."""
    start = time.perf_counter()
    mask_dir = require(mask_dir, f"run `{command}` first")
    split = params.data.measured_split()
    dataset, index = open_split(params, split)
    conf, ignored = evaluate_mask_dir(dataset, mask_dir, len(index["classes"]), num_workers(params),
                                      f"eval [{label}/{params.method}]")
    return ({"method": params.method} | iou_report(conf, index["classes"]) | {"ignored_fraction": round(ignored, 6)}
            | split_fields(split, len(dataset.ids)) | protocol
            | {"seconds": round(time.perf_counter() - start, 2)})


def run(params: Params) -> dict:
    metrics = evaluate(params, "crf")
    if distributed.is_main():  # under torchrun every rank evaluated its shard; the totals are on all of them
        with atomic_dir(stage_dir(params, "eval_pseudo", params.method)) as out:
            write_eval(out, metrics)
    return metrics
