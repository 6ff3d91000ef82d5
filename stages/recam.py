"""Stage ``recam``: ReCAM's fine-tuning (:mod:`pipeline.cam.recam`) of the classifier ``train_cls`` trained, for
any CAM method; with ``recam.enabled`` the ``cam`` stage reads its checkpoint and writes re-activated CAMs.

ReCAM is a stage after ``train_cls`` rather than a fifth CAM method because it refines a trained
classifier of any method (the paper plugs it into CAM variants; here cam, seam, ppl and cpn alike) and
reads out through that method's own ``cam()``: as a method it would have to be one method or wrap each.

Writes ``outputs/recam/<method>/``: ``model.pt`` (the method with the read-out weights folded into its
classifier, loadable like ``train_cls``'s, plus the fine-tuned classifier and the predictor under
``recam``), ``history.csv`` (loss terms per epoch: ``cls`` = L_bce, ``recam`` = L_sce, ``acc`` = the
predictor's accuracy on the class-specific features) and ``metrics.json``. With ``recam.enabled: false``
only ``metrics.json`` saying so (the DVC output that ``cam`` depends on). Resumable and torchrun-ready as
``train_cls`` (``recam.resume_every``).
"""
from __future__ import annotations

from pathlib import Path

from pipeline.engine import distributed
from pipeline.engine.atomic import atomic_dir, write_json
from stages.common import stage_dir
from stages.config import Params


def classifier_checkpoint(params: Params) -> Path:
    """The classifier the ``cam`` stage reads: ReCAM's when ``recam.enabled``, else ``train_cls``'s."""
    stage = "recam" if params.recam.enabled else "train_cls"
    return stage_dir(params, stage, params.method) / "model.pt"


def run(params: Params) -> dict:
    if not params.recam.enabled:  # no torch imported: the demo's default
        if distributed.is_main():
            with atomic_dir(stage_dir(params, "recam", params.method)) as out:
                write_json(out / "metrics.json", {"enabled": False})
        return {"enabled": False}
    from stages.recam_training import fine_tune
    return fine_tune(params)
