"""The one SGD training loop of every trained stage, with hooks for what differs (the shape of detectron2's
``engine/train_loop.py``: a loop that calls hooks before and after each step).

Shared by all: SGD with momentum on the model's ``param_groups(lr, head_lr_mult)`` (the backbone at ``lr``,
new layers at ``head_lr_mult * lr``), the learning rate of every group set each step to its initial value
times ``schedule(step)`` (DeepLab's poly decay ``(1 - step / max_steps)^0.9`` by default, PSA / SEAM / IRN
likewise), autocast + GradScaler when ``amp`` and the device is CUDA, cuDNN autotuning on CUDA.

What differs goes through :class:`Hook` objects and the ``schedule``:
- per-epoch trainings (classifier, AffinityNet, IRN, ReCAM: :func:`pipeline.engine.epochs.train_method`) run
  ``epochs * len(loader)`` steps with the hooks of :mod:`pipeline.engine.hooks` (epoch means of the loss
  terms, the method's progress, PPL's per-stage poly schedule); per-step trainings (DeepLab, the single
  stage) run ``max_steps`` steps;
- validation and logging (the stages' dvclive log, :class:`stages.training_log.TrainingLog`), progress.

Step ``s`` is batch ``s % len(loader)`` of epoch ``s // len(loader)``; the data order and each sample's
augmentation depend on (seed, epoch, index) only (:class:`pipeline.engine.sampling.EpochSampler`), so a run
resumed from a checkpoint (:mod:`pipeline.engine.resume`, every ``resume_every`` steps) skips to its batch
without loading the ones before and ends with the weights of an uninterrupted run. On resume the steps
already trained are replayed to the hooks' ``after_step`` with their recorded values.

A non-finite loss term stops the run with a :class:`~pipeline.errors.ConfigError` (exit 2) naming the
stage, the step and epoch and the term, and the lr parameter: on CPU before that step's optimiser step;
on CUDA, where the terms reach the host every HOST_SYNC_STEPS steps (a sync per step stalls the GPU's
queue), at the next sync, which comes before any checkpoint or validation. Either way no checkpoint
holds weights updated by a non-finite loss: the previous one stays for the next run. Under torchrun the
check reads the terms averaged over the ranks, so that every rank stops at the same step.

Under torchrun: DistributedDataParallel around the step (gradients averaged over the ranks, whose
batches together make the single-process batch), SyncBatchNorm on CUDA (torch has none on CPU), the
recorded terms averaged over the ranks; rank 0 writes the checkpoint. A step whose loss is a mean over a
number of elements that varies between ranks weights it by :func:`pipeline.engine.distributed.mean_share`.
"""
from __future__ import annotations

import itertools
import math
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from pipeline.engine import distributed
from pipeline.engine.resume import load_resume, restore_resume, set_rng_state, write_checkpoint
from pipeline.errors import ConfigError, DataError

StepFn = Callable[..., dict]
HOST_SYNC_STEPS = 25  # on CUDA the loss terms reach the host every this many steps
ADDED = ("lr", "seconds")  # what the loop adds to a step's loss terms in its record


class Hook:
    """What a training adds to the loop; every method is optional. ``val_every``: the hook needs the
    step's values on the host at the steps that are multiples of it (validation; shortens CUDA's sync
    interval)."""

    val_every: int | None = None

    def before_train(self, model: nn.Module) -> None:
        """After ``model.train()``, before the optimiser is built (e.g. freezing layers)."""

    def before_step(self, step: int) -> None:
        """Before the batch of ``step`` is loaded (e.g. the method's progress at an epoch's start)."""

    def after_step(self, step: int, values: dict) -> None:
        """``values``: the step's loss terms (floats, averaged over the ranks), ``lr`` and (timed)
        ``seconds``; entries added here are kept in the record. Called in step order, on CUDA at the sync."""


def poly_factor(step: int, max_steps: int, power: float = 0.9) -> float:
    """The poly schedule's factor ``(1 - step / max_steps)^power`` (0 at and after ``max_steps``)."""
    return (1.0 - min(step, max_steps) / max(max_steps, 1)) ** power


def poly_lr(base_lr: float, step: int, max_steps: int, power: float = 0.9) -> float:
    """DeepLab's poly schedule: ``base_lr * (1 - step / max_steps)^power``."""
    if max_steps <= 0:
        raise ConfigError(f"max_steps: must be > 0, got {max_steps}")
    return base_lr * poly_factor(step, max_steps, power)


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


class _Step(nn.Module):
    """``step_fn(model, *batch, step=step)`` as ``forward``: the call DistributedDataParallel wraps."""

    def __init__(self, model: nn.Module, step_fn: StepFn):
        super().__init__()
        self.model = model
        self.step_fn = step_fn

    def forward(self, *batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        return self.step_fn(self.model, *batch, step=step)


def train(model: nn.Module, step_fn: StepFn, loader: Iterable, max_steps: int, lr: float, *,
          name: str, lr_param: str, momentum: float = 0.9, weight_decay: float = 5e-4,
          head_lr_mult: float = 10.0, device: str | torch.device = "cpu", amp: bool = True,
          schedule: Callable[[int], float] | None = None, hooks: Sequence[Hook] = (),
          resume_path: Path | None = None, resume_every: int = 0, resume_key: str = "",
          timed: bool = False) -> list[dict[str, float]]:
    """Train ``model`` for ``max_steps`` SGD steps and return every step's record (loss terms, ``lr`` of
    the first group, ``seconds`` when ``timed``, and what the hooks added).

    ``step_fn(model, *batch, step=step)`` returns the loss terms of a batch (tensors on ``device``), the
    total under ``loss``. ``schedule(step)``: the lr factor (default: poly over ``max_steps``). ``name``
    (the stage) and ``lr_param`` (its lr key) go into the error on a non-finite loss. ``resume_path``:
    continue from the state there if it was written for ``resume_key``, and write it every
    ``resume_every`` steps (0: never); the caller deletes it once the outputs are published."""
    if max_steps <= 0:
        raise ConfigError(f"{name}: max_steps (the steps to train) must be > 0, got {max_steps}")
    if lr <= 0:
        raise ConfigError(f"{lr_param}: must be > 0, got {lr}")
    schedule = schedule or (lambda step: poly_factor(step, max_steps))
    device = torch.device(device)
    use_amp = amp and device.type == "cuda"
    world = distributed.world_size()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest algorithms
    if world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device).train()
    for hook in hooks:
        hook.before_train(model)
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
    records: list[dict[str, float]] = []
    state = load_resume(resume_path, resume_key)
    if state is not None and restore_resume(resume_path, state, ("records", "rng"), model, optimizer, scaler):
        records = state["records"]
        rngs = state["rng"]
        set_rng_state(rngs[distributed.rank() % len(rngs)])
        if distributed.is_main():
            print(f"resuming from {resume_path}: step {len(records)} of {max_steps}", file=sys.stderr)
        for step, values in enumerate(records):
            for hook in hooks:
                hook.after_step(step, values)
    per_epoch = len(loader)  # type: ignore[arg-type]
    batches = batches_from(loader, len(records))
    sync_every = _sync_every(device, resume_every, [hook.val_every for hook in hooks])
    pending: list[tuple[int, dict, float, float]] = []  # steps whose terms are still on the device
    window = time.perf_counter()
    for step in range(len(records), max_steps):
        for hook in hooks:
            hook.before_step(step)
        batch = [tensor.to(device, non_blocking=True) for tensor in next(batches)]
        factor = schedule(step)
        for group, lr0 in zip(optimizer.param_groups, initial):
            group["lr"] = lr0 * factor
        start = time.perf_counter()
        with torch.autocast(device.type, enabled=use_amp):
            terms = step_module(*batch, step=step)
        detached = {key: value.detach().float() if torch.is_tensor(value) else float(value)
                    for key, value in terms.items()}
        if sync_every == 1:  # CPU: averaged over the ranks (all stop together) and checked before the step
            detached = distributed.mean_over_ranks(_host_values([detached])[0])
            _check_finite(detached, step, per_epoch, name, lr_param)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        pending.append((step, detached, optimizer.param_groups[0]["lr"], time.perf_counter() - start))
        if (step + 1) % sync_every and step + 1 < max_steps:
            continue  # no host sync yet (CUDA): the terms stay on the device until the next flush
        now = time.perf_counter()
        for (step_i, _, lr_i, own_seconds), host in zip(pending, _host_values([d for _, d, _, _ in pending])):
            values = host if sync_every == 1 else distributed.mean_over_ranks(host)  # CPU: averaged above
            _check_finite(values, step_i, per_epoch, name, lr_param)
            values["lr"] = lr_i
            if timed:  # CPU: the step's own time; CUDA (asynchronous): the window's mean step time
                values["seconds"] = own_seconds if sync_every == 1 else (now - window) / len(pending)
            records.append(values)
            for hook in hooks:
                hook.after_step(step_i, values)
        pending, window = [], now
        if resume_path is not None and resume_every > 0 and (step + 1) % resume_every == 0 and step + 1 < max_steps:
            write_checkpoint(resume_path, resume_key, model, optimizer, scaler, records)
    return records


def _host_values(steps: list[dict]) -> list[dict[str, float]]:
    """The steps' terms as floats, the tensors brought to the host in one transfer."""
    tensors = [value for terms in steps for value in terms.values() if torch.is_tensor(value)]
    floats = iter(torch.stack(tensors).tolist() if tensors else [])
    return [{key: next(floats) if torch.is_tensor(value) else value for key, value in terms.items()}
            for terms in steps]


def _check_finite(values: dict[str, float], step: int, per_epoch: int, name: str, lr_param: str) -> None:
    bad = [key for key, value in values.items() if not math.isfinite(value)]
    if bad:
        term = next((key for key in bad if key != "loss"), bad[0])
        raise ConfigError(f"{name}: the loss became {values[term]} in term {term!r} at step {step} (epoch "
                          f"{step // max(per_epoch, 1)}); lower {lr_param} or check the inputs")


def _sync_every(device: torch.device, resume_every: int, val_every: Sequence[int | None]) -> int:
    """Steps between host syncs: 1 on CPU; on CUDA HOST_SYNC_STEPS, shortened to divide the resume and
    validation intervals so that checkpoints and validation see every step recorded."""
    if device.type != "cuda":
        return 1
    every = HOST_SYNC_STEPS
    for interval in (resume_every, *val_every):
        if interval:
            every = math.gcd(every, int(interval))
    return every
