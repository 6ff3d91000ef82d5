"""Outputs written by every torchrun rank and published whole: resumable and shared work directories."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, Sequence

from pipeline.errors import WsssError


@contextlib.contextmanager
def resumable_output(path: Path, key: str) -> Iterator[Path]:
    """The work directory of a per-image stage's output ``path`` (:func:`pipeline.engine.atomic.atomic_dir` with
    ``key``): files finished by an earlier killed run of the same key are kept, the directory is published
    whole once every rank is done. Under torchrun every rank writes its shard (:func:`todo`) into the
    shared directory and rank 0 publishes it after a barrier."""
    from pipeline.engine import distributed
    from pipeline.engine.atomic import atomic_dir, partial_dir

    distributed.setup("cpu")  # under torchrun: join the group (gloo) if no stage did yet
    if distributed.is_main():
        with atomic_dir(path, key=key) as work:
            distributed.barrier()  # the work directory exists
            yield from _all_ranks(work)
    else:
        distributed.barrier()
        yield from _all_ranks(partial_dir(path, key))
    distributed.barrier()  # published


@contextlib.contextmanager
def shared_output(path: Path) -> Iterator[Path]:
    """:func:`pipeline.engine.atomic.atomic_dir` shared by every torchrun rank: rank 0 makes the temporary directory,
    every rank writes its images into it, rank 0 publishes it once all are done (in one process: plain
    ``atomic_dir``)."""
    from pipeline.engine import distributed
    from pipeline.engine.atomic import atomic_dir

    distributed.setup("cpu")
    if distributed.is_main():
        with atomic_dir(path) as work:
            distributed.broadcast_object(str(work))
            yield from _all_ranks(work)
    else:
        yield from _all_ranks(Path(distributed.broadcast_object(None)))
    distributed.barrier()  # published


def _all_ranks(work: Path) -> Iterator[Path]:
    from pipeline.engine import distributed

    try:
        yield work
    except BaseException:
        distributed.all_ok(False)
        raise
    if not distributed.all_ok(True):
        raise WsssError(f"{work}: another process failed; the finished files are kept for the next run")


def todo(ids: Sequence[str], work: Path, suffix: str) -> list[str]:
    """This rank's ids (``ids[rank::world]``) whose ``<id><suffix>`` is not in ``work`` yet (a file there
    is complete: files are renamed into place)."""
    from pipeline.engine import distributed

    mine = [i for i in distributed.shard(ids) if not (work / f"{i}{suffix}").exists()]
    if distributed.world_size() > 1:
        print(f"rank {distributed.rank()} of {distributed.world_size()}: {len(mine)} of {len(ids)} images to do",
              file=sys.stderr)
    return mine
