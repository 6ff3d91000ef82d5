"""Stage ``train_single``: the single-stage branch (:mod:`pipeline.segmentation.single_stage`): a segmentation model
trained end to end with pCE + the dense-CRF / DFR loss from the ``scribbles`` stage's labels
(``single.supervision: scribble``), from online CAM seeds (``image``) or from ground truth (``full``).

Writes ``outputs/train_single/<supervision>_<loss>/``: ``model.pt``, ``metrics.json`` (final loss terms,
val mIoU, seconds per step) and ``dvclive/`` (loss-term and val mIoU curves). A killed run resumes from
``outputs/.resume/train_single/<supervision>_<loss>/<key>.pt`` (``single.resume_every``); under torchrun
every rank trains (DistributedDataParallel, ``batch_size`` the global batch) and rank 0 validates and writes.
"""
from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np

from pipeline.data.voc import image_size
from pipeline.engine import distributed
from pipeline.engine.atomic import atomic_dir, save_torch
from pipeline.engine.runtime import resolve_device, seed_everything
from pipeline.errors import DataError
from pipeline.models.backbones import build_backbone
from pipeline.segmentation.scribbles import read_scribble
from pipeline.segmentation.single_stage import (
    PartialLabelSamples,
    SingleStageLoss,
    SingleStageModel,
    train_single_stage,
)
from stages.common import (
    clear_resume,
    index_path,
    open_split,
    progress_bar,
    require,
    resume_path,
    run_key,
    stage_dir,
    training_loader,
)
from stages.config import Params
from stages.records import write_metrics
from stages.segmentation_models import single_tag
from stages.training_log import TrainingLog
from stages.train_seg import augmentation, val_miou

LOSS_FIELDS = ("supervision", "loss", "crf_weight", "crf_scale", "sigma_rgb", "sigma_xy", "warmup_steps",
               "sigma_deep", "fc_weight", "fc_pixels", "fc_confidence", "deep_warmup_steps", "cls_weight",
               "seed_fg", "seed_bg")


def build_model(params: Params, num_classes: int, pretrained) -> SingleStageModel:
    """train_seg's DeepLab (its backbone batch norms frozen as ``single.freeze_backbone_bn`` says) with the
    heads the loss needs."""
    cfg = params.single
    backbone = build_backbone(params.backbone.name, params.backbone.output_stride, pretrained)
    return SingleStageModel(backbone, num_classes, head=cfg.head,
                            embed_dim=cfg.embed_dim if cfg.loss == "dfr" else None,
                            with_cam=cfg.supervision == "image",
                            freeze_backbone_bn=cfg.freezes_backbone_bn(pretrained, params.uses_generated_data()))


def label_source(params: Params, train, index: dict):
    """``id -> (H, W) labels`` for the chosen supervision."""
    split = params.data.train_split
    supervision = params.single.supervision
    if supervision == "scribble":
        folder = require(stage_dir(params, "scribbles"), "run `wsss-pipe scribbles` first")
        return lambda image_id: read_scribble(folder / f"{image_id}.png", image_size(train.image_path(image_id)),
                                              train.num_classes)
    if supervision == "full":
        if not index["splits"][split]["has_masks"]:
            raise DataError(f"single.supervision: full needs masks for split {split!r}")
        return train.load_mask
    return lambda image_id: np.full(image_size(train.image_path(image_id)), 255, dtype=np.uint8)


def run(params: Params) -> dict:
    cfg = params.single
    device = resolve_device(params.device)
    generator = seed_everything(params.seed)
    train, index = open_split(params, params.data.train_split)
    val, _ = open_split(params, params.data.val_split)
    class_names = index["classes"]
    labels = index["splits"][params.data.train_split]["labels"]
    samples = PartialLabelSamples(train, train.ids, label_source(params, train, index), labels, augmentation(cfg))
    loader = training_loader(samples, cfg, generator, device)
    model = build_model(params, len(class_names), params.backbone.pretrained)
    objective = SingleStageLoss(**{name: getattr(cfg, name) for name in LOSS_FIELDS} |
                                {"sigma_xy": cfg.kernel_sigma_xy(), "warmup_steps": cfg.warmup()})
    tag = single_tag(params)

    key = run_key(params, ["seed", "backbone", "single", "data"] + (["scribbles"] if cfg.supervision == "scribble" else []),
                  [index_path(params)] + ([stage_dir(params, "scribbles")] if cfg.supervision == "scribble" else []))
    resume = resume_path(params, "train_single", tag, key)
    clear_resume(resume, keep=True)  # a run with other params or inputs never resumes
    main = distributed.is_main()
    # rank 0 writes; a resumed run replays the steps already trained into the fresh dvclive log
    with (atomic_dir(stage_dir(params, "train_single", tag)) if main else nullcontext() as out,
          progress_bar(f"train_single [{tag}]") as bar):
        task = bar.add_task("train", total=cfg.steps)
        log = TrainingLog(out / "dvclive", lambda: val_miou(model, val, len(class_names), device), cfg.val_every,
                          cfg.steps, lambda done: bar.update(task, completed=done)) if main else None
        start = time.perf_counter()
        lr = cfg.learning_rate(cfg.freezes_backbone_bn(params.backbone.pretrained, params.uses_generated_data()))
        history = train_single_stage(model, objective, loader, cfg.steps, lr, cfg.momentum,
                                     cfg.weight_decay, cfg.head_lr_mult, device, cfg.amp, hooks=[log] if log else [],
                                     resume_path=resume, resume_every=cfg.resume_every, resume_key=key)
        if not main:
            distributed.barrier()
            return {}
        final_val = log.end()
        tail = history[-10:]
        # the first steps include one-off costs (allocator, cudnn autotuning): time the rest
        timed = history[min(5, len(history) - 1):]
        metrics = {"supervision": cfg.supervision, "loss": cfg.loss,
                   "final_terms": {k: round(float(np.mean([h[k] for h in tail])), 6)
                                   for k in tail[-1] if k not in ("seconds", "lr", "val_miou")},
                   "val_miou_single_scale": round(final_val, 6),
                   "seconds_per_step": round(float(np.mean([h["seconds"] for h in timed])), 4),
                   "seconds": round(time.perf_counter() - start, 2)}
        save_torch({"head": cfg.head, "class_names": class_names, "supervision": cfg.supervision,
                    "loss": cfg.loss, "embed_dim": model.embed.layers[-1].out_channels if model.embed else None,
                    "with_cam": model.cam_head is not None,
                    "backbone": {"name": params.backbone.name, "output_stride": params.backbone.output_stride},
                    "state_dict": model.cpu().state_dict()}, out / "model.pt")
        write_metrics(out, metrics)
    clear_resume(resume)
    distributed.barrier()
    return metrics
