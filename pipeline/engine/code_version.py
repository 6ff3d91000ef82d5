"""A digest of the package's own source, part of every resume key (:func:`stages.common.run_key`).

A killed run leaves a keyed work directory (``.<name>.<key>.partial``) and a resume checkpoint; a run
after a code fix must not reuse what the old code wrote, so the key hashes the bytes of every ``.py``
file under ``pipeline/`` and ``stages/`` (their paths relative to the package root too: a renamed module
changes it). Computed once per process and cached.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = ("pipeline", "stages")


def source_digest(root: Path, packages: tuple[str, ...] = SOURCE_PACKAGES) -> str:
    """sha256 over (relative path, bytes) of every ``*.py`` under ``root/<package>``, in sorted order."""
    digest = hashlib.sha256()
    for package in packages:
        for file in sorted((Path(root) / package).rglob("*.py")):
            digest.update(f"{file.relative_to(root).as_posix()}\0{file.stat().st_size}\0".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """:func:`source_digest` of this installation's ``pipeline`` and ``stages`` (cached per process)."""
    return source_digest(PACKAGE_ROOT)
