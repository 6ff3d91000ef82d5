"""Resume state: the key of a run (params sections and inputs), where its state lives, its clean-up."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from stages.config import Params


def run_key(params: Params, sections: Sequence[str], inputs: Sequence[Path] = ()) -> str:
    """A short hash of the params ``sections`` (dotted: ``methods.seam``) and of the ``inputs`` (files,
    or directories taken whole: names, sizes, modification times) a stage reads, and of the package's source
    (:func:`pipeline.engine.code_version.code_digest`): resume state and partial outputs are reused only by a
    run with the same key, so never after a code change."""
    import hashlib
    import json

    from pipeline.engine.code_version import code_digest

    dump = params.model_dump(mode="json")
    chosen = {}
    for dotted in sections:
        node = dump
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        chosen[dotted] = node
    digest = hashlib.sha256(json.dumps(chosen, sort_keys=True).encode())
    digest.update(code_digest().encode())
    for path in inputs:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            info = file.stat()
            digest.update(f"{file.relative_to(path.parent)}:{info.st_size}:{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def resume_path(params: Params, stage: str, method: str | None, key: str) -> Path:
    """<outputs>/.resume/<stage>/<method>/<key>.pt: outside the stage's output (DVC never sees it)."""
    return Path(params.paths.outputs) / ".resume" / stage / (method or "") / f"{key}.pt"


def clear_resume(path: Path, keep: bool = False) -> None:
    """Remove the resume files of this stage (all keys; all but ``path`` when ``keep``) and the directories
    left empty. Rank 0 only."""
    from pipeline.engine import distributed

    if not distributed.is_main():
        return
    for stale in path.parent.glob("*.pt"):
        if not (keep and stale == path):
            stale.unlink(missing_ok=True)
            if keep:
                print(f"{stale}: discarded, written by a run with other params, inputs or code", file=sys.stderr)
    for directory in [path.parent, *path.parent.parents]:
        try:
            directory.rmdir()
        except OSError:
            break
        if directory.name == ".resume":
            break
