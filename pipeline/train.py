"""The generic classifier trainer shared by every CAM method.

SGD with momentum, polynomial learning-rate decay (power 0.9, as PSA/SEAM), the backbone at ``lr`` and
the new layers at ``head_lr_mult * lr``; CUDA with automatic mixed precision when the device is CUDA.
Optionally the backbone's batch norm is frozen (:func:`freeze_batchnorm`), as PSA's, SEAM's and CPN's
ResNet-38 (``resnet38d.Net.train``) does: running statistics from pretraining, affine parameters fixed.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from pipeline.methods.base import CamMethod


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data loaders."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from pipeline.errors import ConfigError

        raise ConfigError("device: cuda was asked for but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def freeze_batchnorm(module: nn.Module) -> int:
    """Put every batch-norm layer of ``module`` in eval mode (running statistics are used, not updated)
    and stop its affine parameters' gradients. Call after ``.train()``, which would undo the first part.
    Returns the number of layers frozen."""
    frozen = 0
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()
            for param in layer.parameters(recurse=False):
                param.requires_grad_(False)
            frozen += 1
    return frozen


def poly_lr_factor(step: int, max_steps: int, power: float = 0.9) -> float:
    return (1.0 - min(step, max_steps) / max(max_steps, 1)) ** power


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
) -> list[dict[str, float]]:
    """Train ``method`` on batches of (images (B,3,H,W) in [0,1], targets) and return one dict of mean loss
    terms per epoch. Any module with ``training_step(images, targets)`` and ``param_groups(lr, mult)``
    trains here: the CAM methods (multi-hot labels) and AffinityNet (confident label maps). ``on_step(step, total_steps)`` is called after every step (progress). Methods
    trained in stages (``stage_span(epoch, epochs)`` -> the epochs of the current stage) get a poly schedule
    per stage. ``freeze_bn``: :func:`freeze_batchnorm` on
    ``method.backbone`` (frozen layers stay frozen afterwards)."""
    method.to(device).train()
    if freeze_bn:
        freeze_batchnorm(method.backbone)
    groups = method.param_groups(lr, head_lr_mult)
    for group in groups:
        group["initial_lr"] = group["lr"]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    steps_per_epoch = len(loader)  # type: ignore[arg-type]
    total_steps = max(1, epochs * steps_per_epoch)
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(epochs):
        if hasattr(method, "set_progress"):
            method.set_progress(epoch, epochs)
        # the poly decay runs over the whole training, or restarts with each stage of a method trained in
        # stages with a schedule each (PPL's progressive stages: ``stage_span``)
        span = method.stage_span(epoch, epochs) if hasattr(method, "stage_span") else range(epochs)
        sums: dict[str, float] = {}
        count = 0
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            factor = poly_lr_factor(step - span.start * steps_per_epoch, len(span) * steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
            with torch.autocast(device.type, enabled=use_amp):
                terms = method.training_step(images, labels)
            loss = terms["loss"]
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"training loss became {float(loss)} at step {step}; lower the lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach() if torch.is_tensor(value) else value)
            count += 1
            step += 1
            if on_step is not None:
                on_step(step, total_steps)
        history.append({name: total / max(count, 1) for name, total in sums.items()} | {"epoch": epoch})
    method.eval()
    return history
