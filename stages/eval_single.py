"""Stage ``eval_single``: val mIoU of the single-stage model with the evaluation code of ``eval_seg``
(:func:`stages.eval_seg.evaluate_model`: single scale and ``eval_single``'s multi-scale + flip, optional
dense-CRF post-processing, per-class IoU, confusion plot, predictions as palette PNGs).

Writes ``outputs/eval_single/<supervision>_<loss>/`` in the layout of ``eval_seg``.
"""
from __future__ import annotations

from pipeline.engine.runtime import resolve_device
from stages.common import open_split, shared_output, stage_dir
from stages.config import Params
from stages.eval_seg import evaluate_model
from stages.train_single import load_single_model, single_tag


def run(params: Params) -> dict:
    device = resolve_device(params.device)
    tag = single_tag(params)
    model, checkpoint = load_single_model(stage_dir(params, "train_single", tag) / "model.pt", device)
    val, index = open_split(params, params.data.val_split)
    with shared_output(stage_dir(params, "eval_single", tag)) as out:
        return evaluate_model(model, val, index["classes"], params.eval_single, params.crf.crf_kwargs(), out,
                              f"eval_single [{tag}]",
                              {"supervision": checkpoint["supervision"], "loss": checkpoint["loss"],
                               "split": params.data.val_split})
