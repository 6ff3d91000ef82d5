"""The ``recam`` stage's fine-tuning when ``recam.enabled`` (:mod:`stages.recam`; kept apart so that the
disabled stage imports no torch)."""
from __future__ import annotations

import time

from pipeline.cam.recam import ReCAM, classifier_of, fold_predictor
from pipeline.data.loaders import ClassificationSamples
from pipeline.data.transforms import train_transform
from pipeline.engine import distributed
from pipeline.engine.atomic import atomic_dir
from pipeline.engine.epochs import train_method
from pipeline.engine.runtime import resolve_device, seed_everything
from pipeline.errors import DataError
from stages.checkpoints import load_method, save_checkpoint
from stages.common import (
    clear_resume,
    index_path,
    open_split,
    progress_bar,
    resume_path,
    run_key,
    stage_dir,
    training_loader,
)
from stages.config import Params
from stages.records import write_history, write_metrics


def fine_tune(params: Params) -> dict:
    """Fine-tune train_cls's classifier with ReCAM's loss; write ``outputs/recam/<method>/``."""
    cfg = params.recam
    device = resolve_device(params.device)
    generator = seed_everything(params.seed)
    source = stage_dir(params, "train_cls", params.method) / "model.pt"
    method, checkpoint = load_method(source, device)
    dataset, index = open_split(params, params.data.train_split)
    if checkpoint["class_names"] != index["classes"]:
        raise DataError(f"{source}: trained on other classes than {index_path(params)}; rerun `wsss-pipe train-cls`")
    objective = ReCAM(method, cfg.loss_weight)
    cls = params.train_cls
    samples = ClassificationSamples(
        dataset, dataset.ids, index["splits"][params.data.train_split]["labels"], len(index["classes"]) - 1,
        train_transform(cls.crop_size, cls.scale_min, cls.scale_max, cls.color_jitter),
    )
    loader = training_loader(samples, cls, generator, device)
    key = run_key(params, ["seed", "method", "recam", "train_cls", "data"], [source, index_path(params)])
    resume = resume_path(params, "recam", params.method, key)
    clear_resume(resume, keep=True)
    start = time.perf_counter()
    with progress_bar(f"recam [{params.method}]") as bar:
        task = bar.add_task("train", total=cfg.epochs * len(loader))
        history = train_method(
            objective, loader, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
            head_lr_mult=cfg.head_lr_mult, device=device, amp=cls.amp,
            on_step=lambda step, total: bar.update(task, completed=step),
            freeze_bn=cls.freezes_bn(params.backbone.pretrained),
            resume_path=resume, resume_every=cfg.resume_every, resume_key=key, name="recam", lr_param="recam.lr",
        )
    metrics = {k: v for k, v in history[-1].items() if k != "epoch"}
    metrics |= {"enabled": True, "seconds": round(time.perf_counter() - start, 2)}
    if not distributed.is_main():
        distributed.barrier()
        return metrics
    method = method.cpu()
    predictor = objective.predictor.cpu()
    fine_tuned = classifier_of(method).weight.detach().clone()
    with atomic_dir(stage_dir(params, "recam", params.method)) as out:
        save_checkpoint(out / "model.pt", fold_predictor(method, predictor), checkpoint["options"],
                        checkpoint["backbone"], checkpoint["class_names"],
                        extra={"recam": {"classifier": fine_tuned, "predictor": predictor.weight.detach().clone()}})
        write_history(out, history)
        write_metrics(out, metrics)
    clear_resume(resume)
    distributed.barrier()
    return metrics

