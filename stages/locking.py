"""One run per stage at a time on one outputs tree, and an outputs tree that can hold outputs.

Two runs of the same stage (and method) on the same ``paths.outputs`` would share its keyed work directory
and publish each other's half-finished output. Each stage run therefore holds an exclusive lock
(``fcntl.flock``) on ``<outputs>/.locks/<stage>[.<method>].lock`` from start to end; a second run **fails at
once** (exit 2) with a one-line message naming the holder (pid, host, start time) rather than waiting an
unbounded time behind a training. The kernel releases the lock when its holder exits, however it exits
(SIGKILL included), so a stale lock file is harmless. Under torchrun rank 0 alone takes it.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from pipeline.engine.atomic import make_parents, remove_if_empty
from pipeline.errors import ConfigError, WsssError


def check_outputs_root(outputs: str) -> list[Path]:
    """Make sure ``paths.outputs`` is a directory that exists and is writable; a ConfigError naming it
    otherwise (empty, the working directory or one of its parents, a file, not writable). Returns the
    directories it created, deepest first."""
    if not str(outputs).strip():
        raise ConfigError("paths.outputs: empty; give the folder that holds the outputs (e.g. outputs)")
    root = Path(outputs)
    resolved, cwd = root.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ConfigError(f"paths.outputs: {outputs} is the working directory or one of its parents; the "
                          "outputs need a folder of their own (e.g. outputs)")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"paths.outputs: {outputs} is a file, not a directory")
    try:
        created = make_parents(root)
    except OSError as exc:
        raise ConfigError(f"paths.outputs: cannot create {outputs} ({exc.strerror or exc})") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(f"paths.outputs: {outputs} is not writable")
    return created


@contextlib.contextmanager
def stage_lock(outputs: str, stage: str, method: str | None = None) -> Iterator[Path]:
    """Hold the exclusive lock of ``stage`` (per ``method`` when given) under ``outputs``; a WsssError naming
    the holder when another process has it. The lock file, and the folders made for it, are removed on
    release (a stage that fails leaves nothing behind)."""
    created = check_outputs_root(outputs)
    path = Path(outputs) / ".locks" / (f"{stage}.{method}.lock" if method else f"{stage}.lock")
    created = make_parents(path.parent) + created
    try:
        fd = _acquire(path, f"{stage} [{method}]" if method else stage)
    except BaseException:
        remove_if_empty(created)
        raise
    try:
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with contextlib.suppress(OSError):  # a full disk must not stop the run here: the lock is held
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}".encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still held: a process that opened it before re-checks and retries
        os.close(fd)
        remove_if_empty([path.parent, *(d for d in created if d != path.parent)])


def _acquire(path: Path, name: str) -> int:
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise WsssError(f"{path}: another `wsss-pipe` run of {name} holds this lock ({holder}); wait for it "
                            "to finish (it is released when that process exits)") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder released and removed it between our open and our lock: take the new one


def _holder(fd: int, wait_s: float = 1.0) -> str:
    """The holder's line (pid, host, start). It writes it just after taking the lock, so a run that finds the
    file still empty looks again for up to ``wait_s`` before naming "another process"."""
    deadline = time.monotonic() + wait_s
    while True:
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
        if text or time.monotonic() >= deadline:
            return text or "another process"
        time.sleep(0.02)
