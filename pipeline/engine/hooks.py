"""Hooks of :func:`pipeline.engine.trainer.train` shared by the stages: per-epoch trainings (means of the
loss terms per epoch, the method's progress, PPL's per-stage schedule), progress bars, frozen batch norm."""
from __future__ import annotations

from typing import Callable

from torch import nn

from pipeline.engine.trainer import ADDED, Hook, poly_factor


class EpochMeans(Hook):
    """The mean of every loss term over each epoch of ``per_epoch`` steps: ``history`` gets one dict per
    finished epoch (with ``epoch``). The terms are already averaged over the ranks."""

    def __init__(self, per_epoch: int):
        self.per_epoch = per_epoch
        self.history: list[dict[str, float]] = []
        self.sums: dict[str, float] = {}
        self.count = 0

    def after_step(self, step: int, values: dict) -> None:
        for name, value in values.items():
            if name not in ADDED and name != "val_miou":
                self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1
        if (step + 1) % self.per_epoch == 0:
            self.history.append({name: total / self.count for name, total in self.sums.items()}
                                | {"epoch": step // self.per_epoch})
            self.sums, self.count = {}, 0


class MethodProgress(Hook):
    """``method.set_progress(epoch, epochs)`` at the start of every epoch (and of a resumed run)."""

    def __init__(self, method: nn.Module, epochs: int, per_epoch: int):
        self.method, self.epochs, self.per_epoch = method, epochs, per_epoch
        self.epoch: int | None = None

    def before_step(self, step: int) -> None:
        epoch = step // self.per_epoch
        if epoch != self.epoch:
            self.method.set_progress(epoch, self.epochs)
            self.epoch = epoch


class Progress(Hook):
    """``report(steps_done, total)`` after every step (a progress bar)."""

    def __init__(self, report: Callable[[int, int], None], total: int):
        self.report, self.total = report, total

    def after_step(self, step: int, values: dict) -> None:
        self.report(step + 1, self.total)


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


class FreezeBatchNorm(Hook):
    """Freeze ``module``'s batch norms (:func:`freeze_batchnorm`) once the model is in
    training mode, before the optimiser takes its parameters."""

    def __init__(self, module: Callable[[nn.Module], nn.Module]):
        self.module = module

    def before_train(self, model: nn.Module) -> None:
        freeze_batchnorm(self.module(model))


def epoch_schedule(method: nn.Module, epochs: int, per_epoch: int) -> Callable[[int], float]:
    """The poly factor of a step of a per-epoch training: over the whole training, or restarting with
    each stage of a method trained in stages (``method.stage_span(epoch, epochs)`` -> that stage's epochs:
    PPL's progressive stages)."""
    if not hasattr(method, "stage_span"):
        return lambda step: poly_factor(step, epochs * per_epoch)

    def factor(step: int) -> float:
        span = method.stage_span(step // per_epoch, epochs)
        return poly_factor(step - span.start * per_epoch, len(span) * per_epoch)

    return factor
