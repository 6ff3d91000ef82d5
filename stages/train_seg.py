"""Stage ``train_seg``: DeepLab trained on the pseudo masks (``train_seg.labels: pseudo``) or on the
ground truth (``labels: gt``, the fully supervised upper bound: same code, a parameter switch), on the
split ``train_seg.split`` (default ``data.train_split``, the split the pseudo masks are made on; VOC's
protocol makes pseudo masks on train_aug and trains DeepLab on train_aug), validated on ``data.val_split``.

Writes ``outputs/train_seg/<method>_<labels>/``: ``model.pt``, ``metrics.json`` (final loss, val mIoU,
wall time) and ``dvclive/`` (loss and val mIoU curves, DVC plots). A killed run resumes from
``outputs/.resume/train_seg/<method>_<labels>/<key>.pt`` (``train_seg.resume_every``); under torchrun
every rank trains (DistributedDataParallel, ``batch_size`` the global batch) and rank 0 validates and writes.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from pipeline.data.image_files import load_mask
from pipeline.data.loaders import SegmentationSamples
from pipeline.engine import distributed
from pipeline.engine.atomic import atomic_dir, save_torch
from pipeline.engine.runtime import resolve_device, seed_everything
from pipeline.errors import DataError
from pipeline.metrics import confusion_matrix, mean_iou
from pipeline.models.backbones import build_backbone
from pipeline.segmentation.deeplab import build_deeplab
from pipeline.segmentation.inference import image_to_tensor, predict
from pipeline.segmentation.training import segmentation_train_transform, train_segmentation
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
from stages.config import Params, SegTrainingParams
from stages.records import write_metrics
from stages.segmentation_models import seg_tag
from stages.training_log import TrainingLog


def train_split(params: Params) -> str:
    """The split DeepLab trains on: ``train_seg.split``, else ``data.train_split``."""
    return params.train_seg.split or params.data.train_split


def check_pseudo_masks(mask_dir: Path, image_ids: list[str], split: str) -> None:
    """Fail with one line naming the first missing pseudo mask when ``mask_dir`` lacks any id of ``split``."""
    missing = [image_id for image_id in image_ids if not (mask_dir / f"{image_id}.png").is_file()]
    if missing:
        raise DataError(f"{mask_dir / (missing[0] + '.png')}: pseudo mask missing ({len(missing)} of "
                        f"{len(image_ids)} images of train_seg split {split!r}); run `wsss-pipe crf` on "
                        f"that split (data.train_split) or set train_seg.split")


def augmentation(cfg: SegTrainingParams):
    """The segmentation recipe's training augmentation (train_seg's and train_single's sections)."""
    return segmentation_train_transform(cfg.crop_size, cfg.scale_min, cfg.scale_max, cfg.color_jitter,
                                        cfg.scale_reference)


def val_miou(model, dataset, num_classes: int, device: torch.device) -> float:
    """Single-scale val mIoU (the training curve; ``eval_seg`` gives the reported figures)."""
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for image_id in dataset.ids:
        probs = predict(model, image_to_tensor(dataset.load_image(image_id)).to(device))
        conf += confusion_matrix(probs.argmax(0), dataset.load_mask(image_id), num_classes)
    return mean_iou(conf)


def save_model(path: Path, model, params: Params, class_names: list[str]) -> None:
    save_torch({"head": params.train_seg.head, "class_names": class_names, "train_split": train_split(params),
                "backbone": {"name": params.backbone.name, "output_stride": params.backbone.output_stride},
                "state_dict": model.state_dict()}, path)


def run(params: Params) -> dict:
    cfg = params.train_seg
    device = resolve_device(params.device)
    generator = seed_everything(params.seed)
    split = train_split(params)
    train, index = open_split(params, split)
    val, _ = open_split(params, params.data.val_split)
    class_names = index["classes"]
    if cfg.labels == "pseudo":
        mask_dir = require(stage_dir(params, "crf", params.method), "run `wsss-pipe crf` first")
        check_pseudo_masks(mask_dir, train.ids, split)
        mask_fn = lambda image_id: load_mask(mask_dir / f"{image_id}.png")  # noqa: E731
    else:
        if not index["splits"][split]["has_masks"]:
            raise DataError(f"train_seg.labels: gt needs masks for split {split!r}")
        mask_fn = train.load_mask
    samples = SegmentationSamples(train, train.ids, mask_fn, augmentation(cfg))
    loader = training_loader(samples, cfg, generator, device)
    backbone = build_backbone(params.backbone.name, params.backbone.output_stride, params.backbone.pretrained)
    frozen_bn = cfg.freezes_backbone_bn(params.backbone.pretrained, params.uses_generated_data())
    model = build_deeplab(backbone, len(class_names), head=cfg.head, freeze_backbone_bn=frozen_bn)
    inputs = [index_path(params)] + ([mask_dir] if cfg.labels == "pseudo" else [])
    key = run_key(params, ["seed", "method", "backbone", "train_seg", "data"], inputs)
    resume = resume_path(params, "train_seg", seg_tag(params), key)
    clear_resume(resume, keep=True)  # a run with other params or inputs never resumes
    main = distributed.is_main()
    # rank 0 writes; a resumed run replays the steps already trained into the fresh dvclive log
    with (atomic_dir(stage_dir(params, "train_seg", seg_tag(params))) if main else nullcontext() as out,
          progress_bar(f"train_seg [{seg_tag(params)}]") as bar):
        task = bar.add_task("train", total=cfg.steps)
        log = TrainingLog(out / "dvclive", lambda: val_miou(model, val, len(class_names), device), cfg.val_every,
                          cfg.steps, lambda done: bar.update(task, completed=done)) if main else None
        start = time.perf_counter()
        records = train_segmentation(model, loader, cfg.steps, cfg.learning_rate(frozen_bn), cfg.momentum,
                                     cfg.weight_decay, cfg.head_lr_mult, device, cfg.amp, hooks=[log] if log else [],
                                     resume_path=resume, resume_every=cfg.resume_every, resume_key=key)
        if not main:
            distributed.barrier()
            return {}
        metrics = {"labels": cfg.labels, "loss": round(float(np.mean([r["loss"] for r in records[-10:]])), 6),
                   "val_miou_single_scale": round(log.end(), 6),
                   "seconds": round(time.perf_counter() - start, 2)}
        save_model(out / "model.pt", model.cpu(), params, class_names)
        write_metrics(out, metrics)
    clear_resume(resume)
    distributed.barrier()
    return metrics
