"""``wsss-pipe doctor``: is this machine and this dataset ready for the pipeline? On one screen: Python,
torch, the device and AMP, the dense CRF actually run, the backbones' ImageNet weights available offline
(:mod:`pipeline.engine.environment`), and the VOC-layout tree at ``data.root`` checked by the reader's own rules
(:mod:`pipeline.data.doctor`): images and masks per split, classes, missing or unreadable files, masks of
the wrong size or with values outside the classes, scribbles.

Reads only. Every problem is one line on stderr (``problem: ...``); any problem makes the exit status 2.
"""
from __future__ import annotations

import sys
import time

from pipeline.data.doctor import check_dataset
from pipeline.engine import environment
from pipeline.errors import WsssError
from stages.common import num_workers
from stages.config import Params


class ProblemsFound(WsssError):
    """The doctor found problems (listed above the error line)."""


def run(params: Params, limit: int = 10) -> dict:
    from rich.console import Console
    from rich.table import Table

    start = time.perf_counter()
    checks = [*environment.python_and_torch(), *environment.device(params.device), environment.dense_crf(),
              *environment.backbone_weights(params.backbone.name, params.backbone.pretrained)]
    splits = [params.data.train_split, params.data.val_split] + ([params.train_seg.split]
                                                                 if params.train_seg.split else [])
    data = check_dataset(params.data.root, splits, params.data.train_split, limit, num_workers(params))

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for check in checks:
        table.add_row(check.name, f"[red]{check.found}[/red]" if check.problem else check.found)
    table.add_row("data.root", data.root)
    if data.classes:
        table.add_row("classes", f"{len(data.classes)} from {data.classes_from}: {', '.join(data.classes)}")
    for split in data.splits:
        masks = f"{split.masks} masks" if split.labels_from.startswith("masks") else f"labels from {split.labels_from}"
        table.add_row(f"split {split.split}", f"{split.ids} ids, {split.images} images, {masks}"
                      + (f", [red]{len(split.problems)} problem lines[/red]" if split.problems else ""))
    table.add_row("scribbles", data.scribbles)
    problems = [c.problem for c in checks if c.problem] + data.problems
    verdict = (f"[red]{len(problems)} problem(s)[/red]" if problems else "[green]ready[/green]")
    table.add_row("verdict", f"{verdict} ({time.perf_counter() - start:.1f} s)")
    Console(soft_wrap=False).print(table)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        raise ProblemsFound(f"{len(problems)} problem(s) found: see the lines above")
    return {"problems": problems}
