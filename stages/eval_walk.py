"""Stage ``eval_walk <method>``: mIoU of a propagation method's walk label maps on the measured split
(before the CRF).

Writes ``<outputs>/eval_walk/<method>/<CAM method>/``: ``metrics.json`` (headline figures),
``details.json`` and ``per_class.csv``.
"""
from __future__ import annotations

from pipeline.engine import distributed
from pipeline.engine.atomic import atomic_dir
from pipeline.propagation import get_propagation
from stages.common import write_eval
from stages.config import Params
from stages.eval_pseudo import evaluate_dir
from stages.propagation import command, prop_dir
from stages.protocol import walk_protocol


def run(params: Params, name: str) -> dict:
    get_propagation(name)
    metrics = evaluate_dir(params, prop_dir(params, "walk", name), command("walk", name), f"walk/{name}",
                           walk_protocol(params, name))
    if distributed.is_main():  # under torchrun every rank evaluated its shard; the totals are on all of them
        with atomic_dir(prop_dir(params, "eval_walk", name)) as out:
            write_eval(out, metrics)
    return metrics
