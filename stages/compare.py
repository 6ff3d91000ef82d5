"""``wsss-pipe compare``: CAM methods side by side, from the per-method outputs already on disk.

Reads ``outputs/eval_cam/<method>/metrics.json`` (and the training wall time from
``outputs/train_cls/<method>/metrics.json``) for every method that has them, prints a Markdown table and
writes it to ``outputs/compare/methods.md`` and ``methods.json``. `benchmarks/compare_methods.sh` fills
those directories with one `dvc exp run` per method and then calls this.
"""
from __future__ import annotations

from pipeline.cam.methods import METHODS
from pipeline.engine.atomic import atomic_dir, read_json, write_json
from pipeline.errors import WsssError
from stages.common import stage_dir
from stages.config import Params


def run(params: Params) -> list[dict]:
    rows = []
    for method in METHODS:
        eval_path = stage_dir(params, "eval_cam", method) / "metrics.json"
        if not eval_path.is_file():
            continue
        metrics = read_json(eval_path)
        train_path = stage_dir(params, "train_cls", method) / "metrics.json"
        seconds = read_json(train_path).get("seconds") if train_path.is_file() else None
        rows.append({"method": method, "miou": metrics["miou"], "best_threshold": metrics["best_threshold"],
                     "train_seconds": seconds})
    if not rows:
        raise WsssError(f"{stage_dir(params, 'eval_cam')}: no method has been evaluated; run `wsss-pipe eval-cam` first")
    baseline = next((r["miou"] for r in rows if r["method"] == "cam"), None)
    lines = ["| method | CAM mIoU (best threshold) | vs cam | threshold | train time (s) |", "|---|---|---|---|---|"]
    for row in rows:
        gain = "" if baseline is None else f"{100 * (row['miou'] - baseline):+.1f}"
        seconds = "" if row["train_seconds"] is None else f"{row['train_seconds']:.0f}"
        lines.append(f"| {row['method']} | {100 * row['miou']:.1f} | {gain} | {row['best_threshold']:.2f} | {seconds} |")
    table = "\n".join(lines) + "\n"
    print(table, end="")
    with atomic_dir(stage_dir(params, "compare")) as out:
        (out / "methods.md").write_text(table)
        write_json(out / "methods.json", rows)
    return rows
