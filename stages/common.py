"""What every stage shares: output locations, the dataset index, progress bars, process pools."""
from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pipeline.errors import DataError, WsssError
from pipeline.io import read_json
from stages.config import Params

T = TypeVar("T")
R = TypeVar("R")


def stage_dir(params: Params, stage: str, method: str | None = None) -> Path:
    """outputs/<stage>[/<method>]: one directory per stage (per method where methods coexist)."""
    path = Path(params.paths.outputs) / stage
    return path / method if method else path


def index_path(params: Params) -> Path:
    return stage_dir(params, "data") / "index.json"


def load_index(params: Params) -> dict:
    path = index_path(params)
    if not path.is_file():
        raise DataError(f"{path}: dataset index not found; run `wsss-pipe data` first")
    index = read_json(path)
    if Path(index["root"]).resolve() != Path(params.data.root).resolve():
        raise DataError(f"{path}: indexes {index['root']}, not data.root={params.data.root}; rerun `wsss-pipe data`")
    return index


def open_split(params: Params, split: str):
    """(VOCDataset of ``split`` with the index's labels, index dict)."""
    from pipeline.data.voc import VOCDataset

    index = load_index(params)
    if split not in index["splits"]:
        raise DataError(f"{index_path(params)}: split {split!r} is not indexed; check data.*_split")
    labels = index["splits"][split]["labels"]
    return VOCDataset(params.data.root, split, labels=labels), index


def num_workers(params: Params) -> int:
    return params.workers or os.cpu_count() or 1


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
    """``map(fn, items)`` over ``workers`` processes (in-process when 1), in order, with progress."""
    if workers <= 1 or len(items) <= 1:
        yield from track(map(fn, items), len(items), description)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_single_thread_torch) as pool:
        yield from track(pool.map(fn, items, chunksize=chunksize), len(items), description)


def _single_thread_torch() -> None:
    torch.set_num_threads(1)


def require(path: Path, hint: str) -> Path:
    if not path.exists():
        raise WsssError(f"{path}: not found; {hint}")
    return path
