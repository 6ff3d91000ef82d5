"""Where stages write (outputs/<stage>[/<method>]) and the dataset index they read."""
from __future__ import annotations

from pathlib import Path

from pipeline.engine.atomic import read_json
from pipeline.errors import DataError, WsssError
from stages.config import Params


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


def require(path: Path, hint: str) -> Path:
    if not path.exists():
        raise WsssError(f"{path}: not found; {hint}")
    return path
