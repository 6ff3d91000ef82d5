"""The per-epoch trainer shared by every CAM method and the propagation networks.

SGD with momentum, polynomial learning-rate decay (power 0.9, as PSA/SEAM), the backbone at ``lr`` and
the new layers at ``head_lr_mult * lr``; CUDA with automatic mixed precision when the device is CUDA.
Optionally the backbone's batch norm is frozen (:func:`pipeline.engine.hooks.freeze_batchnorm`), as
PSA's, SEAM's and CPN's ResNet-38 (``resnet38d.Net.train``) does: running statistics from pretraining,
affine parameters fixed.

The loop itself (resumable, DistributedDataParallel under torchrun, AMP, one behaviour on a non-finite
loss) is :func:`pipeline.engine.trainer.train`; :func:`train_method` runs it per epoch with the hooks of
:mod:`pipeline.engine.hooks`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import torch
from torch import nn

from pipeline.engine import hooks as epoch_hooks
from pipeline.engine.trainer import train

if TYPE_CHECKING:
    from pipeline.cam.methods.base import CamMethod


def train_method(
    method: CamMethod,
    loader: Iterable,
    epochs: int,
    lr: float,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    head_lr_mult: float = 10.0,
    device: torch.device = torch.device("cpu"),
    amp: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    freeze_bn: bool = False,
    resume_path: Path | None = None,
    resume_every: int = 0,
    resume_key: str = "",
    name: str = "train_cls",
    lr_param: str = "train_cls.lr",
) -> list[dict[str, float]]:
    """Train ``method`` on batches of (images (B,3,H,W) in [0,1], targets) for ``epochs`` epochs on the one
    loop (:func:`pipeline.engine.trainer.train`) and return one dict of mean loss terms per epoch. Any
    module with ``training_step(images, targets)`` and ``param_groups(lr, mult)`` trains here: the CAM
    methods (multi-hot labels), AffinityNet and IRN (label maps). ``on_step(step, total_steps)`` is called
    after every step (progress). Methods trained in stages (``stage_span(epoch, epochs)``) get a poly
    schedule per stage; ``set_progress(epoch, epochs)`` is called at every epoch's start. ``freeze_bn``:
    :func:`pipeline.engine.hooks.freeze_batchnorm` on ``method.backbone`` (frozen layers stay frozen
    afterwards). ``resume_*``, ``name`` (the stage) and ``lr_param``: as :func:`pipeline.engine.trainer.train`."""
    per_epoch = len(loader)  # type: ignore[arg-type]
    means = epoch_hooks.EpochMeans(max(per_epoch, 1))
    hooks: list = [means]
    if freeze_bn:
        hooks.append(epoch_hooks.FreezeBatchNorm(lambda model: model.backbone))
    if hasattr(method, "set_progress"):
        hooks.append(epoch_hooks.MethodProgress(method, epochs, per_epoch))
    if on_step is not None:
        hooks.append(epoch_hooks.Progress(on_step, epochs * per_epoch))
    train(method, _training_step, loader, epochs * per_epoch, lr, name=name, lr_param=lr_param,
          momentum=momentum, weight_decay=weight_decay, head_lr_mult=head_lr_mult, device=device, amp=amp,
          schedule=epoch_hooks.epoch_schedule(method, epochs, per_epoch), hooks=hooks,
          resume_path=resume_path, resume_every=resume_every, resume_key=resume_key)
    method.eval()
    return means.history


def _training_step(method: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> dict:
    return method.training_step(images, targets)
