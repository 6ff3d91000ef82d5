"""Stage ``eval_single``: val mIoU of the single-stage model with the evaluation code of ``eval_seg``
(:func:`stages.eval_seg.evaluate_model`: single scale and ``eval_single``'s multi-scale + flip, optional
dense-CRF post-processing, per-class IoU, confusion plot, predictions as palette PNGs).

Writes ``outputs/eval_single/<supervision>_<loss>/`` in the layout of ``eval_seg``.
"""
from __future__ import annotations

from stages.config import Params
from stages.eval_seg import evaluate_trained
from stages.segmentation_models import load_single_model, single_tag


def run(params: Params) -> dict:
    return evaluate_trained(params, "train_single", "eval_single", single_tag(params), load_single_model,
                            params.eval_single,
                            lambda checkpoint: {"supervision": checkpoint["supervision"], "loss": checkpoint["loss"]})
