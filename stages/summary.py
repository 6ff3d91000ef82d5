"""``wsss-pipe summary``: one table of the run from the records the stages wrote
(``outputs/<stage>/<tag>/details.json``; rows and lineage: :mod:`pipeline.report.summary`).

A rich table on a terminal, or (``as_json``) the summary as JSON on stdout for scripts. Reads only; a
record that is not valid JSON or lacks its mIoU is a one-line error naming the file.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from pipeline.engine.atomic import read_json
from pipeline.errors import DataError
from pipeline.report.cooccurrence import cooccurrence_table
from pipeline.report.summary import build_summary, summary_table
from stages.common import index_path, load_index, stage_dir
from stages.config import Params
from stages.artifacts import summary_rows
from stages.table import STAGES, resolve


# each row's tag (pipeline.report.summary.SummaryRow.tag): the params values its stages ran with
TAG_VALUES = {"method": {}, "seg": {"train_seg.labels": "pseudo"}, "seg_gt": {"train_seg.labels": "gt"},
              "single": {}, "single_full": {"single.supervision": "full"}}


def _record(path: Path, required: tuple[str, ...]) -> dict | None:
    if not path.is_file():
        return None
    record = read_json(path)
    if not isinstance(record, dict):
        raise DataError(f"{path}: not a JSON object; rerun the stage that wrote it")
    for key in required:
        value = record.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            raise DataError(f"{path}: {key!r} missing or not a number; rerun the stage that wrote it")
    return record


def collect(params: Params) -> dict:
    records, timings, rows = {}, {}, summary_rows()
    for row in rows:
        values = TAG_VALUES[row.tag]
        required = ("miou", "best_threshold") if row.artifact == "cam" else ("miou",)
        records[row.key] = _record(resolve(STAGES[row.evaluation].record, params, values), required)
        if records[row.key] is None:
            continue
        timings[row.key] = {}
        for stage in row.timed:
            record = _record(resolve(STAGES[stage].record, params, values), ())
            if record is not None and isinstance(record.get("seconds"), (int, float)):
                timings[row.key][stage] = record["seconds"]
    summary = build_summary(records, timings, params.crf.source, params.single.supervision, rows)
    return {"method": params.method, "outputs": str(params.paths.outputs)} | summary | {
        "never_alone": _never_alone(params)}


def _never_alone(params: Params) -> list[dict]:
    """The train split's classes that never appear alone (their CAMs may spread to what they appear
    with), with the CAM's IoU of each where eval_cam ran; empty before the data stage."""
    if not index_path(params).is_file():
        return []
    index = load_index(params)
    rows = cooccurrence_table(index["splits"][params.data.train_split]["labels"], index["classes"],
                              stage_dir(params, "eval_cam", params.method) / "per_class.csv")
    return [row for row in rows if row["never_alone"]]


def run(params: Params, as_json: bool = False) -> dict:
    summary = collect(params)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        from rich.console import Console

        console = Console()
        console.print(summary_table(summary, f"wsss-pipe run: {summary['outputs']} (method {params.method})"))
        for row in summary["never_alone"]:
            iou = "" if row["iou"] is None else f", CAM IoU {100 * row['iou']:.1f}"
            console.print(f"[yellow]{row['class']}[/yellow] never appears alone in {params.data.train_split} "
                          f"({row['with_partner']} of {row['images']} images with {row['partner']}{iou})")
    return summary
