"""The report's index: plain JSON data (``data/index.json``, also as ``data/index.js`` for the page, which
cannot ``fetch`` files when opened from disk) and the static page around it (``index.html``,
``report.js``, ``report.css``: no external scripts, fonts or styles).
"""
from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import numpy as np

from pipeline.data.image_files import voc_palette
from pipeline.report.scores import dataset_miou, gains, per_class_iou, pipeline_keys, stage_names

STATIC = Path(__file__).parent / "static"


def sort_rows(rows: list[dict], key: str = "final", descending: bool = False) -> list[dict]:
    """Rows ordered by a column (a stage, a gain "irn-cam", "final" or "id"); rows without it last, ties
    by id. The page's default (worst first) is ``sort_rows(rows)``; report.js sorts the same way."""
    def value(row):
        if key == "id":
            return row["id"]
        if key == "final":
            return row.get("final")
        return row["gains"].get(key) if "-" in key else row["scores"].get(key)

    present = [r for r in rows if value(r) is not None]
    missing = [r for r in rows if value(r) is None]
    present.sort(key=lambda r: r["id"])
    present.sort(key=value, reverse=descending)
    return present + sorted(missing, key=lambda r: r["id"])


def filter_rows(rows: list[dict], class_index: int | None = None, worse: bool = False,
                split: str | None = None) -> list[dict]:
    """Rows showing class ``class_index`` (labelled or in ground truth), where a stage lowered the mIoU
    (``worse``), of ``split``; report.js filters the same way."""
    return [r for r in rows
            if (class_index is None or class_index in r["classes"]) and (not worse or r["worse"])
            and (split is None or r["split"] == split)]


def finish_rows(rows: list[dict], parents: dict[str, str]) -> None:
    """Add each row's gains, its "worse" flag (some stage lowered its mIoU) and "final" (the mIoU of its
    last pipeline stage, or the single-stage prediction's where no pipeline stage is scored: the default,
    worst-first sort key)."""
    for row in rows:
        row["gains"] = gains(row["scores"], parents)
        row["worse"] = any(v < 0 for v in row["gains"].values())
        last = [row["scores"][s] for s in pipeline_keys() if row["scores"].get(s) is not None] \
            or [row["scores"][s] for s in stage_names() if row["scores"].get(s) is not None]
        row["final"] = last[-1] if last else None


def split_summary(confusions: dict[str, np.ndarray], count: int) -> dict:
    """Per-stage dataset mIoU and per-class IoU from the summed per-image confusions of one split."""
    return {"count": count,
            "miou": {s: dataset_miou(c) for s, c in confusions.items()},
            "per_class": {s: per_class_iou(c) for s, c in confusions.items()}}


def palette(num_classes: int) -> list[list[int]]:
    colours = voc_palette(256)
    return [colours[i].tolist() for i in range(num_classes)] + [colours[255].tolist()]


def write_page(out: Path, data: dict) -> None:
    """Write the index data and copy the page's static files into the report directory ``out``."""
    text = json.dumps(data, separators=(",", ":"))
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "data" / "index.json").write_text(text + "\n")
    (out / "data" / "index.js").write_text(f"inspectIndex({text});\n")
    for name in ("report.js", "report.css"):
        shutil.copy(STATIC / name, out / name)
    page = (STATIC / "index.html").read_text().replace("{title}", html.escape(data["title"]))
    (out / "index.html").write_text(page)
