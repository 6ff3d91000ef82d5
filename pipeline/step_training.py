"""The step-counted SGD loop of the segmentation trainers (DeepLab: :mod:`pipeline.segmentation`; the
single stage: :mod:`pipeline.single_stage`).

What the two share with the epoch-based classifier trainer (:func:`pipeline.train.train_method`):
- the poly schedule ``lr * (1 - step / max_steps)^0.9`` on every parameter group's initial lr, SGD with
  momentum, autocast + GradScaler when ``amp`` and the device is CUDA;
- resumable: every ``resume_every`` steps the model, optimiser, grad scaler, step, the per-step history
  and every rank's RNG states go to ``resume_path``; a run started again with the same ``resume_key``
  continues from there and ends with the weights of an uninterrupted run (the data order and each
  sample's augmentation depend on (seed, epoch, index) only: :class:`pipeline.distributed.EpochSampler`);
- under torchrun: DistributedDataParallel around the step (gradients averaged over the ranks, whose
  batches together make the single-process batch), SyncBatchNorm on CUDA, the logged terms averaged over
  the ranks; rank 0 writes the resume file. A step function whose loss is a mean over a number of
  elements that varies between ranks (labelled pixels) weights it by
  :func:`pipeline.distributed.mean_share` to get the single-process gradient (DeepLab's does).

On CUDA the loss terms stay on the device and reach the host every HOST_SYNC_STEPS steps (a sync per step
would stall the GPU's queue); ``log_fn`` then sees those steps in order, before any validation or resume
checkpoint (the interval divides ``resume_every`` and ``log_fn.val_every``). On CPU every step is logged
as it ends.

The loader is iterated epoch after epoch for as many batches as ``max_steps`` needs; step ``s`` is batch
``s % len(loader)`` of epoch ``s // len(loader)``, so a resumed run skips to its batch without loading the
ones before it.
"""
from __future__ import annotations

import itertools
import math
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from pipeline import distributed
from pipeline.errors import ConfigError, DataError
from pipeline.train import load_resume, restore_resume, rng_state, save_resume, set_rng_state, tune_cudnn

StepFn = Callable[..., dict]


class _Step(nn.Module):
    """``step_fn(model, *batch, step=step)`` as ``forward``: the call DistributedDataParallel wraps."""

    def __init__(self, model: nn.Module, step_fn: StepFn):
        super().__init__()
        self.model = model
        self.step_fn = step_fn

    def forward(self, *batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        return self.step_fn(self.model, *batch, step=step)


def poly_lr(base_lr: float, step: int, max_steps: int, power: float = 0.9) -> float:
    """DeepLab's poly schedule: base_lr * (1 - step / max_steps)^power (0 at and after max_steps)."""
    if max_steps <= 0:
        raise ConfigError(f"max_steps: must be > 0, got {max_steps}")
    return base_lr * max(0.0, 1.0 - step / max_steps) ** power


def batches_from(loader: Iterable, start_step: int) -> Iterator:
    """The loader's batches from global step ``start_step`` on, epoch after epoch, forever."""
    per_epoch = len(loader)  # type: ignore[arg-type]
    if per_epoch == 0:
        raise DataError("training: the data loader yields no batch (empty split?)")
    epoch, skip = divmod(start_step, per_epoch)
    sampler = getattr(loader, "sampler", None)
    while True:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch, skip)  # starts part-way without loading the skipped samples
            batches: Iterable = loader
        else:
            batches = itertools.islice(loader, skip, None)
        yielded = False
        for batch in batches:
            yielded = True
            yield batch
        if not yielded:
            raise DataError("training: the data loader yielded no batch")
        epoch, skip = epoch + 1, 0


def train_steps(model: nn.Module, step_fn: StepFn, loader: Iterable, max_steps: int, lr: float,
                momentum: float = 0.9, weight_decay: float = 5e-4, head_lr_mult: float = 10.0,
                device: str | torch.device = "cpu", amp: bool = True,
                log_fn: Callable[[int, dict], None] | None = None, lr_param: str = "lr",
                resume_path: Path | None = None, resume_every: int = 0, resume_key: str = "",
                timed: bool = False) -> list[dict[str, float]]:
    """Train ``model`` (with ``param_groups(lr, head_lr_mult)``) for ``max_steps`` SGD steps; return every
    step's loss terms (floats) and backbone ``lr`` (and ``seconds`` of the step when ``timed``).

    ``step_fn(model, *batch, step=step)`` returns the loss terms of a batch (tensors on ``device``), the
    total under ``loss``. ``log_fn(step, values)`` is called after every step; it may add entries to
    ``values`` (a validation score), which are kept in the history. On resume the steps already trained
    are replayed: ``log_fn`` is called again with their recorded values (which then hold those entries).
    ``lr_param`` names the parameter in the error raised when the loss stops being finite."""
    if max_steps <= 0:
        raise ConfigError(f"max_steps: must be > 0, got {max_steps}")
    if lr <= 0:
        raise ConfigError(f"{lr_param}: must be > 0, got {lr}")
    device = torch.device(device)
    use_amp = amp and device.type == "cuda"
    world = distributed.world_size()
    tune_cudnn(device)
    if world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device).train()
    step_module: nn.Module = _Step(model, step_fn)
    if world > 1:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=True)
        if distributed.is_main():
            print(f"training on {world} processes (DistributedDataParallel, {device.type})", file=sys.stderr)
    optimizer = torch.optim.SGD(model.param_groups(lr, head_lr_mult), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    initial = [group["lr"] for group in optimizer.param_groups]
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict[str, float]] = []
    state = load_resume(resume_path, resume_key)
    if state is not None and restore_resume(resume_path, state, ("history", "rng"), model, optimizer, scaler):
        history = state["history"]
        rngs = state["rng"]
        set_rng_state(rngs[distributed.rank() % len(rngs)])
        if distributed.is_main():
            print(f"resuming from {resume_path}: step {len(history)} of {max_steps}", file=sys.stderr)
        if log_fn is not None:
            for step, values in enumerate(history):
                log_fn(step, values)
    batches = batches_from(loader, len(history))
    sync_every = _sync_every(device, resume_every, getattr(log_fn, "val_every", None))
    pending: list[tuple[int, dict, float, float]] = []  # steps whose terms are still on the device
    window = time.perf_counter()
    for step in range(len(history), max_steps):
        for group, lr0 in zip(optimizer.param_groups, initial):
            group["lr"] = poly_lr(lr0, step, max_steps)
        batch = [tensor.to(device, non_blocking=True) for tensor in next(batches)]
        start = time.perf_counter()
        with torch.autocast(device.type, enabled=use_amp):
            terms = step_module(*batch, step=step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        detached = {name: (value.detach().float() if torch.is_tensor(value) else torch.tensor(float(value)))
                    for name, value in terms.items()}
        pending.append((step, detached, optimizer.param_groups[0]["lr"], time.perf_counter() - start))
        if (step + 1) % sync_every and step + 1 < max_steps:
            continue  # no host sync yet (CUDA): the terms stay on the device until the next flush
        now = time.perf_counter()
        rows = torch.stack([torch.stack([t.to(device) for t in d.values()]) for _, d, _, _ in pending]).tolist()
        for (step_i, detached, lr_i, own_seconds), row in zip(pending, rows):
            values = distributed.mean_over_ranks(dict(zip(detached, row)))
            if not math.isfinite(values["loss"]):
                raise ConfigError(f"{lr_param}: the loss became {values['loss']} at step {step_i}; lower the lr")
            values["lr"] = lr_i
            if timed:  # CPU: the step's own time; CUDA (asynchronous): the window's mean step time
                values["seconds"] = own_seconds if sync_every == 1 else (now - window) / len(pending)
            history.append(values)
            if log_fn is not None:
                log_fn(step_i, values)
        pending, window = [], now
        if resume_path is not None and resume_every > 0 and (step + 1) % resume_every == 0 and step + 1 < max_steps:
            _checkpoint(resume_path, resume_key, model, optimizer, scaler, history)
    return history


HOST_SYNC_STEPS = 25  # on CUDA the loss terms reach the host every this many steps (a sync per step stalls)


def _sync_every(device: torch.device, resume_every: int, val_every: int | None) -> int:
    """Steps between host syncs: 1 on CPU (nothing to wait for); on CUDA HOST_SYNC_STEPS, shortened to
    divide the resume and validation intervals so that checkpoints and validation see every step logged."""
    if device.type != "cuda":
        return 1
    every = HOST_SYNC_STEPS
    for interval in (resume_every, val_every):
        if interval:
            every = math.gcd(every, int(interval))
    return every


def _checkpoint(path: Path, key: str, model: nn.Module, optimizer, scaler, history: list) -> None:
    """Write the resume state (rank 0; every rank's RNG states gathered)."""
    rngs = [rng_state()]
    if distributed.world_size() > 1:
        rngs = [None] * distributed.world_size()
        torch.distributed.all_gather_object(rngs, rng_state())
    if distributed.is_main():
        save_resume(path, {"key": key, "step": len(history), "model": model.state_dict(),
                           "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                           "history": history, "rng": rngs, "world_size": distributed.world_size()})
    distributed.barrier()
