"""Worker processes that never outlive their stage and a process pool that always shuts down.

- :func:`die_with_parent`: a worker (pool or DataLoader) gets SIGKILL when the stage process dies, even by
  SIGKILL (Linux ``PR_SET_PDEATHSIG``), so a killed stage leaves no orphaned workers behind.
- :func:`process_map`: ``map`` over a :class:`~concurrent.futures.ProcessPoolExecutor` that is stopped
  *cooperatively* on any error or interrupt: pending chunks are cancelled and each worker is asked (SIGUSR1)
  to abandon the chunk it is running, which it does by raising :class:`Cancelled` inside the mapped
  function only, never while it talks to the pool. Terminating a worker instead can kill it mid-write to
  the result pipe, after which the executor's manager thread waits forever (the stage printed its error,
  then hung at exit).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterator, Sequence, TypeVar

from pipeline.errors import WsssError

T = TypeVar("T")
R = TypeVar("R")

CANCEL_SIGNAL = signal.SIGUSR1


class Cancelled(BaseException):
    """Raised in a pool worker that was asked to stop (a BaseException: ``except Exception`` lets it pass)."""


_parent_pid: int | None = None
_running = False  # a mapped function is running in this worker
_cancelled = False  # this worker was asked to stop: every later chunk is abandoned at once
_stop_event = None  # set by the parent when the pool stops: seen even by a worker whose handler came late


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere nothing), and exit now
    if the parent died while we asked."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died while we asked
        os._exit(1)


def _on_cancel(signum, frame) -> None:
    global _cancelled
    _cancelled = True
    if _running:
        raise Cancelled()


def init_pool_worker() -> None:
    """Pool worker setup: one torch thread; Ctrl-C is the parent's to handle (it stops the workers);
    SIGTERM (``timeout`` signals the whole process group) and :data:`CANCEL_SIGNAL` abandon the current
    chunk at a safe point; die with the parent. A worker of a stage that did not import torch does not
    either (issue 19: it takes seconds); should its work import torch, that starts with one thread."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    else:
        os.environ["OMP_NUM_THREADS"] = "1"  # torch's thread count when imported
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_cancel)
    signal.signal(CANCEL_SIGNAL, _on_cancel)
    die_with_parent()


def _init_with_stop_event(stop_event, initializer: Callable[[], None]) -> None:
    global _stop_event
    _stop_event = stop_event
    initializer()


def _run_chunk(fn: Callable[[T], R], chunk: Sequence[T]) -> list[R]:
    global _running
    results = []
    for item in chunk:
        try:
            _running = True
            if _cancelled or (_stop_event is not None and _stop_event.is_set()):
                raise Cancelled()
            results.append(fn(item))
        finally:
            _running = False
    return results


def process_map(fn: Callable[[T], R], items: Sequence[T], workers: int, chunksize: int = 1,
                initializer: Callable[[], None] = init_pool_worker) -> Iterator[R]:
    """``fn(item)`` for ``items`` in order, chunks of ``chunksize`` run by ``workers`` processes. On an error
    in a worker (re-raised here), on an exception in the consumer or on an interrupt, the pool is stopped
    cooperatively and waited for before the exception propagates: no worker is left writing."""
    try:  # a worker signalled before its initializer ran must not die of SIGUSR1's default action
        previous = signal.signal(CANCEL_SIGNAL, signal.SIG_IGN)
    except ValueError:  # not the main thread
        previous = None
    stop_event = multiprocessing.get_context().Event()  # the signal misses a worker still starting up
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_with_stop_event,
                               initargs=(stop_event, initializer))
    futures: list[Future] = []
    try:
        futures = [pool.submit(_run_chunk, fn, items[i:i + chunksize]) for i in range(0, len(items), chunksize)]
        for future in futures:
            yield from future.result()
    except BrokenProcessPool:
        _stop(pool, futures, stop_event)
        raise WsssError("a worker process died (killed, or out of memory?); nothing was published") from None
    except BaseException:
        _stop(pool, futures, stop_event)
        raise
    finally:
        if previous is not None:
            signal.signal(CANCEL_SIGNAL, previous)
    pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor, futures: list[Future], stop_event) -> None:
    stop_event.set()
    for future in futures:
        future.cancel()
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        try:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, CANCEL_SIGNAL)
        except (ProcessLookupError, ValueError):
            continue
    pool.shutdown(wait=True, cancel_futures=True)
