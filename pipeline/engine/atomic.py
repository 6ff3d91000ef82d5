"""Atomic writes of stage outputs (the artifact formats: :mod:`pipeline.cam.archive`,
:mod:`pipeline.data.image_files`).

- Every file is written under a temporary name in the same directory and renamed into place, and stage
  output directories are filled under a temporary name and swapped in at the end, so an interrupted run
  leaves no partial output. Outputs get the user's normal permissions (0666 / 0777 less the umask), not
  the private 0600 / 0700 of ``mkstemp`` / ``mkdtemp``. A temporary directory that a killed run
  (SIGKILL) could not remove is removed by the next run of the same stage.
- A per-image stage fills a *keyed* work directory instead (``atomic_dir(path, key=...)``:
  ``.<name>.<key>.partial``, the key hashing the stage's params and inputs) that survives a failed or
  killed run: the next run with the same key keeps its files (each was renamed into place whole, so an
  existing file is complete) and computes only the missing ones; a run with another key discards it.
- A published directory holds the marker file ``.wsss-pipe-output``: a directory without it is replaced only
  when the new output rewrites every file in it, so a stage never deletes what it did not write (see
  :func:`check_replaceable`).
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from pipeline.errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_parents(directory: Path) -> list[Path]:
    """``mkdir -p directory``; returns the directories it created, deepest first (for cleanup on failure)."""
    created = []
    for parent in [directory, *directory.parents]:
        if parent.exists():
            break
        created.append(parent)
    directory.mkdir(parents=True, exist_ok=True)
    return created


def remove_if_empty(directories: list[Path]) -> None:
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, else delete it (and the
    parent directories this call created)."""
    path = Path(path)
    created = make_parents(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())
    done = False
    try:
        yield tmp_path
        os.replace(tmp_path, path)
        done = True
    except OSError as exc:
        if exc.filename is None:  # a failed write (ENOSPC, EIO) names no file: name the one being written
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        if not done:
            remove_if_empty(created)


def partial_dir(path: str | os.PathLike, key: str) -> Path:
    """The keyed work directory of output ``path`` (see :func:`atomic_dir`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{key}.partial")


def remove_stale_temporaries(path: str | os.PathLike, min_age_s: float = 0.0,
                             keep: Path | None = None) -> list[Path]:
    """Delete the temporary directories/files that :func:`atomic_dir` / :func:`atomic_path` left next to
    ``path`` when a run was killed (``.<name>.*.tmp*``, ``.<name>.old``, keyed work directories
    ``.<name>.*.partial`` but ``keep``) and that were last modified at least ``min_age_s`` seconds ago.
    Returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    now = time.time()
    for stale in [*path.parent.glob(f".{path.name}.*.tmp*"), path.parent / f".{path.name}.old",
                  *path.parent.glob(f".{path.name}.*.partial")]:
        if stale == keep:
            continue
        try:
            if now - stale.lstat().st_mtime < min_age_s:
                continue
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
            removed.append(stale)
        except FileNotFoundError:
            continue
    return removed


OWNER_MARKER = ".wsss-pipe-output"
_MARKER_TEXT = "written by wsss-pipe: the next run of this stage replaces this directory whole\n"


def check_replaceable(path: Path, new: Path) -> None:
    """Raise unless the existing output directory ``path`` may be replaced by ``new``: it is ours (holds the
    :data:`OWNER_MARKER` an earlier publish wrote), or each file in it has a namesake in ``new`` (an output of
    an older version, or one DVC restored without the marker: nothing is lost that the stage does not write
    again); and every directory in it can be removed (an OSError naming the first that cannot)."""
    if path.is_symlink() or not path.is_dir():
        raise DataError(f"{path}: exists and is not a directory wsss-pipe wrote; move it away or choose another "
                        "paths.outputs")
    if not (path / OWNER_MARKER).is_file():
        foreign = [p for p in sorted(path.rglob("*"))
                   if not p.is_dir() and not (new / p.relative_to(path)).is_file()]
        if foreign:
            raise DataError(f"{path}: holds {len(foreign)} files that wsss-pipe did not write (e.g. "
                            f"{foreign[0].relative_to(path)}); move it away or choose another paths.outputs")
    for directory in [path, *(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())]:
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "cannot replace the previous output: not writable", str(directory))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, key: str | None = None) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``path``; on success it replaces ``path`` whole. On failure
    the temporary directory and any parent directories this call created are removed. Temporaries left by a
    killed earlier run of the same output are removed first.

    With ``key``: yield the work directory :func:`partial_dir` instead, reused with its files when an
    earlier run of the same key left it, and kept on failure so that the next run resumes it (removed when
    it holds nothing yet).

    ``path`` is replaced only when it is ours and every directory in it can be removed
    (:func:`check_replaceable`): otherwise the error comes before anything moves, and ``path`` stays intact."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise DataError(f"{path}: exists and is not a directory wsss-pipe wrote; move it away or choose another "
                        "paths.outputs")
    created = make_parents(path.parent)
    if key is None:
        remove_stale_temporaries(path)
        tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        tmp_path = partial_dir(path, key)
        for stale in remove_stale_temporaries(path, keep=tmp_path):
            if stale.name.endswith(".partial"):
                print(f"{stale}: discarded, the work of a killed run with other params, inputs or code",
                      file=sys.stderr)
        tmp_path.mkdir(exist_ok=True)
        for leftover in tmp_path.glob(".*.tmp*"):  # a file a killed run was writing
            leftover.unlink(missing_ok=True)
    os.chmod(tmp_path, 0o777 & ~_umask())
    done = False
    try:
        yield tmp_path
        (tmp_path / OWNER_MARKER).write_text(_MARKER_TEXT)
        if path.exists() or path.is_symlink():
            check_replaceable(path, tmp_path)
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            try:
                os.replace(tmp_path, path)
            except BaseException:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)  # checked removable; a leftover goes with the next run
        else:
            os.replace(tmp_path, path)
        done = True
    finally:
        if tmp_path.exists() and (done or key is None):
            shutil.rmtree(tmp_path, ignore_errors=True)
        if not done and key is not None:
            with contextlib.suppress(OSError):
                tmp_path.rmdir()  # a failure before the first finished file leaves no empty work directory
        if not done and (key is None or not tmp_path.exists()):
            remove_if_empty(created)


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_torch(obj, path: str | os.PathLike) -> None:
    """``torch.save`` written atomically through Python's file I/O, so that a full disk is an OSError
    (ENOSPC) naming the file, not torch's RuntimeError from its own writer."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def read_json(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
