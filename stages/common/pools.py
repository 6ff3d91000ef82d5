"""Process pools and progress bars of per-image stages."""
from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from pipeline.engine.processes import process_map
from stages.config import Params

T = TypeVar("T")
R = TypeVar("R")

def num_workers(params: Params) -> int:
    """``workers``; 0 = all cores, shared among the processes torchrun started on this machine."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return params.workers or max(1, (os.cpu_count() or 1) // local)


def progress_bar(description: str) -> Progress:
    """A rich progress bar, silent when stderr is not a terminal (CI, DVC logs)."""
    return Progress(
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not sys.stderr.isatty(),
        transient=False,
    )


def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    with progress_bar(description) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int, description: str,
                 chunksize: int = 4) -> Iterator[R]:
    """``map(fn, items)`` over ``workers`` processes (in-process when 1), in order, with progress; on an
    error or interrupt the workers are stopped and waited for (:func:`pipeline.engine.processes.process_map`)."""
    if workers <= 1 or len(items) <= 1:
        yield from track(map(fn, items), len(items), description)
        return
    yield from track(process_map(fn, items, workers, chunksize), len(items), description)
