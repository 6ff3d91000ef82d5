"""The dvclive log of the step-counted trainings (train_seg, train_single), on rank 0: every loss term per
step, the single-scale val mIoU every ``val_every`` steps and at the end, the progress bar.

A resumed training replays the steps it had done (:func:`pipeline.engine.trainer.train`); their values
already hold the val mIoU measured then, which is logged again, not measured again, so the curves are whole.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from dvclive import Live

from pipeline.engine.trainer import Hook


class TrainingLog(Hook):
    def __init__(self, directory: Path, validate: Callable[[], float], val_every: int, steps: int,
                 progress: Callable[[int], None]):
        self.live = Live(dir=str(directory), save_dvc_exp=False, dvcyaml=None, report=None)
        self.validate, self.val_every, self.steps, self.progress = validate, val_every, steps, progress
        self.curve: list[tuple[int, float]] = []

    def after_step(self, step: int, values: dict) -> None:
        """Adds ``val_miou`` to ``values`` at the validation steps."""
        for name, value in values.items():
            if name != "val_miou":
                self.live.log_metric(name, value)
        if "val_miou" not in values and ((step + 1) % self.val_every == 0 or step + 1 == self.steps):
            values["val_miou"] = self.validate()
        if "val_miou" in values:
            self.curve.append((step + 1, values["val_miou"]))
            self.live.log_metric("val_miou", values["val_miou"])
        self.live.next_step()
        self.progress(step + 1)

    def end(self) -> float:
        """Close the log; return the last val mIoU."""
        self.live.end()
        return self.curve[-1][1]
