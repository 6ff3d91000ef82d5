"""The generic classifier trainer shared by every CAM method.

SGD with momentum, polynomial learning-rate decay (power 0.9, as PSA/SEAM), the backbone at ``lr`` and
the new layers at ``head_lr_mult * lr``; CUDA with automatic mixed precision when the device is CUDA.
Optionally the backbone's batch norm is frozen (:func:`freeze_batchnorm`), as PSA's, SEAM's and CPN's
ResNet-38 (``resnet38d.Net.train``) does: running statistics from pretraining, affine parameters fixed.

Beyond the references (PSA, IRN, CPN: one GPU; SEAM: DataParallel):
- Resumable: every ``resume_every`` steps the model, optimiser, grad scaler, position (epoch, batch),
  loss sums and every rank's RNG states go to a resume file; a killed run started again with the same
  file continues from it and ends with the same weights as an uninterrupted run (the data order and
  augmentation depend only on (seed, epoch, index): :mod:`pipeline.distributed`).
- Under torchrun: DistributedDataParallel (gradients averaged over the ranks, whose batches together
  make the single-process batch), SyncBatchNorm on CUDA where batch norm trains (torch has no CPU
  SyncBatchNorm: on gloo each rank normalises with its own batch statistics), loss terms averaged over
  the ranks.
"""
from __future__ import annotations

import itertools
import math
import random
import sys
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from pipeline import distributed
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
    """The device named by the ``device`` param; under torchrun this also joins the process group and a
    CUDA device becomes this rank's GPU (:func:`pipeline.distributed.setup`)."""
    if name == "auto":
        return distributed.setup(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if name.startswith("cuda") and not torch.cuda.is_available():
        from pipeline.errors import ConfigError

        raise ConfigError("device: cuda was asked for but no CUDA device is available; use auto or cpu")
    return distributed.setup(torch.device(name))


def tune_cudnn(device: torch.device) -> None:
    """Training on CUDA: let cuDNN pick the fastest convolution algorithms for the fixed crop size
    (``cudnn.benchmark``). Inference stages leave it off: their image sizes vary, and each new size would
    be tuned again."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def load_resume(path: Path | None, key: str) -> dict | None:
    """The resume state at ``path`` if it was written for ``key``; None when there is none (or it cannot
    be read: a resume file is a cache, so a damaged one means starting over, not failing)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        return None
    return state if isinstance(state, dict) and state.get("key") == key else None


def restore_resume(path: Path, state: dict, required: tuple[str, ...], model: nn.Module,
                   optimizer: torch.optim.Optimizer, scaler) -> bool:
    """Load ``state``'s model, optimizer and scaler states (with the keys ``required`` present). A state that
    does not fit (weights of other names or shapes, another optimizer) leaves all three untouched and warns:
    a resume file is a cache, so a damaged one means starting over. Returns whether it was restored."""
    import copy

    saved = copy.deepcopy((model.state_dict(), optimizer.state_dict(), scaler.state_dict()))
    try:
        missing = [key for key in ("model", "optimizer", "scaler", *required) if key not in state]
        if missing:
            raise KeyError(f"missing {', '.join(missing)}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        return True
    except Exception as exc:  # RuntimeError (shapes, names), ValueError (optimizer groups), KeyError
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        scaler.load_state_dict(saved[2])
        if distributed.is_main():
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(f"warning: {path}: the resume state does not fit this run ({reason}); starting over",
                  file=sys.stderr)
        return False


def save_resume(path: Path, state: dict) -> None:
    from pipeline.io import save_torch

    save_torch(state, path)


class _TrainingStep(nn.Module):
    """``method.training_step`` as ``forward``, the call DistributedDataParallel synchronises."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.method.training_step(images, targets)


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
    resume_path: Path | None = None,
    resume_every: int = 0,
    resume_key: str = "",
) -> list[dict[str, float]]:
    """Train ``method`` on batches of (images (B,3,H,W) in [0,1], targets) and return one dict of mean loss
    terms per epoch. Any module with ``training_step(images, targets)`` and ``param_groups(lr, mult)``
    trains here: the CAM methods (multi-hot labels) and AffinityNet (confident label maps).
    ``on_step(step, total_steps)`` is called after every step (progress). Methods trained in stages
    (``stage_span(epoch, epochs)`` -> the epochs of the current stage) get a poly schedule per stage.
    ``freeze_bn``: :func:`freeze_batchnorm` on ``method.backbone`` (frozen layers stay frozen afterwards). ``resume_path``: continue from the state
    there if it was written for ``resume_key``, and write it every ``resume_every`` steps (0: never); the
    caller deletes it once the outputs are published. Under torchrun the step runs through
    DistributedDataParallel and only rank 0 writes the resume file."""
    world = distributed.world_size()
    tune_cudnn(device)
    if world > 1 and device.type == "cuda":
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    method.to(device).train()
    if freeze_bn:
        freeze_batchnorm(method.backbone)
    step_module: nn.Module = _TrainingStep(method)
    if world > 1:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=True)
        if distributed.is_main():
            print(f"training on {world} processes (DistributedDataParallel, {device.type})", file=sys.stderr)
    groups = method.param_groups(lr, head_lr_mult)
    for group in groups:
        group["initial_lr"] = group["lr"]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    sync_every = 1 if device.type != "cuda" else math.gcd(HOST_SYNC_STEPS, resume_every or HOST_SYNC_STEPS)
    steps_per_epoch = len(loader)  # type: ignore[arg-type]
    total_steps = max(1, epochs * steps_per_epoch)
    history: list[dict[str, float]] = []
    step = start_epoch = skip = 0
    sums: dict[str, float] = {}
    count = 0
    state = load_resume(resume_path, resume_key)
    if state is not None and restore_resume(resume_path, state, ("step", "history", "sums", "count", "epoch", "rng"),
                                            method, optimizer, scaler):
        step, history, sums, count = state["step"], state["history"], state["sums"], state["count"]
        start_epoch, skip = state["epoch"], count  # count: the batches of this epoch already trained
        rngs = state["rng"]
        set_rng_state(rngs[distributed.rank() % len(rngs)])
        if distributed.is_main():
            print(f"resuming from {resume_path}: step {step} of {total_steps}", file=sys.stderr)
        if on_step is not None:
            on_step(step, total_steps)
    sampler = getattr(loader, "sampler", None)
    for epoch in range(start_epoch, epochs):
        if hasattr(method, "set_progress"):
            method.set_progress(epoch, epochs)
        # the poly decay runs over the whole training, or restarts with each stage of a method trained in
        # stages with a schedule each (PPL's progressive stages: ``stage_span``)
        span = method.stage_span(epoch, epochs) if hasattr(method, "stage_span") else range(epochs)
        if epoch > start_epoch:
            sums, count, skip = {}, 0, 0
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch, skip)  # starts part-way without loading the skipped samples
            batches: Iterable = loader
        else:
            batches = itertools.islice(loader, skip, None)
        for images, labels in batches:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            factor = poly_lr_factor(step - span.start * steps_per_epoch, len(span) * steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
            with torch.autocast(device.type, enabled=use_amp):
                terms = step_module(images, labels)
            loss = terms["loss"]
            if sync_every == 1 and not math.isfinite(loss.item()):
                raise FloatingPointError(f"training loss became {float(loss)} at step {step}; lower the lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            for name, value in terms.items():  # on CUDA summed as device tensors, without a host sync
                value = value.detach().float() if torch.is_tensor(value) else float(value)
                sums[name] = sums.get(name, 0.0) + (value if sync_every > 1 else float(value))
            count += 1
            step += 1
            if sync_every > 1 and step % sync_every == 0:
                sums = _host_sums(sums, step)
            if on_step is not None:
                on_step(step, total_steps)
            if resume_path is not None and resume_every > 0 and step % resume_every == 0 and step < total_steps:
                _checkpoint(resume_path, resume_key, method, optimizer, scaler, epoch, step, history, sums, count)
        history.append(_mean_terms(_host_sums(sums, step) if sync_every > 1 else sums, count) | {"epoch": epoch})
    method.eval()
    return history


HOST_SYNC_STEPS = 25  # on CUDA the loss sums reach the host (and are checked) every this many steps


def _host_sums(sums: dict, step: int) -> dict[str, float]:
    """The running sums as floats (one host sync), failing when the loss has stopped being finite."""
    floats = {name: float(value) for name, value in sums.items()}
    if not math.isfinite(floats.get("loss", 0.0)):
        raise FloatingPointError(f"training loss became {floats['loss']} by step {step}; lower the lr")
    return floats


def _mean_terms(sums: dict[str, float], count: int) -> dict[str, float]:
    """The epoch's mean loss terms, averaged over the ranks (each rank ran the same number of steps)."""
    sums = distributed.mean_over_ranks(sums)
    return {name: total / max(count, 1) for name, total in sums.items()}


def _checkpoint(path: Path, key: str, method: nn.Module, optimizer, scaler, epoch: int, step: int,
                history: list, sums: dict, count: int) -> None:
    """Write the resume state (rank 0; every rank's RNG states gathered)."""
    rngs = [rng_state()]
    if distributed.world_size() > 1:
        rngs = [None] * distributed.world_size()
        torch.distributed.all_gather_object(rngs, rng_state())
    if distributed.is_main():
        save_resume(path, {"key": key, "epoch": epoch, "step": step, "model": method.state_dict(),
                            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                            "history": history, "sums": dict(sums), "count": count, "rng": rngs,
                            "world_size": distributed.world_size()})
    distributed.barrier()
