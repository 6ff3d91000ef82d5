"""Stage ``eval_rw``: mIoU of the random-walk label maps on the train split (before the CRF).

Writes ``outputs/eval_rw/<method>/``: ``metrics.json`` (headline figures), ``details.json`` and
``per_class.csv``.
"""
from __future__ import annotations

from pipeline import distributed
from pipeline.io import atomic_dir
from stages.common import stage_dir, write_eval
from stages.config import Params
from stages.eval_pseudo import evaluate


def run(params: Params) -> dict:
    metrics = evaluate(params, "rw")
    if distributed.is_main():  # under torchrun every rank evaluated its shard; the totals are on all of them
        with atomic_dir(stage_dir(params, "eval_rw", params.method)) as out:
            write_eval(out, metrics)
    return metrics
