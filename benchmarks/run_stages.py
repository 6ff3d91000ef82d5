"""Run wsss-pipe stages in order with parameter overrides, timing each, and print a JSON summary.

    python benchmarks/run_stages.py --out bench/msrc_cam --set data.root=../shared/data/msrc_objects \
        --stages data train_cls cam eval_cam walk@irn eval_walk@irn

A propagation stage is named as in dvc.yaml, ``<stage>@<propagation method>``. Each stage runs exactly as `wsss-pipe <stage>` would (same params validation, same outputs); the summary
gives the wall time of every stage and the metrics files each wrote. Peak RSS of the process is reported
too (ru_maxrss, includes children that finished).
"""
from __future__ import annotations

import argparse
import importlib
import json
import resource
import time

from stages.common import stage_dir
from stages.config import load_params
from stages.propagation import prop_dir
from stages.train_seg import seg_tag
from stages.train_single import single_tag

METRIC_FILES = {
    "train_cls": lambda p: stage_dir(p, "train_cls", p.method) / "details.json",
    "recam": lambda p: stage_dir(p, "recam", p.method) / "details.json",
    "eval_cam": lambda p: stage_dir(p, "eval_cam", p.method) / "details.json",
    "eval_pseudo": lambda p: stage_dir(p, "eval_pseudo", p.method) / "details.json",
    "train_seg": lambda p: stage_dir(p, "train_seg", seg_tag(p)) / "details.json",
    "eval_seg": lambda p: stage_dir(p, "eval_seg", seg_tag(p)) / "details.json",
    "scribbles": lambda p: stage_dir(p, "scribbles") / "stats.json",
    "train_single": lambda p: stage_dir(p, "train_single", single_tag(p)) / "details.json",
    "eval_single": lambda p: stage_dir(p, "eval_single", single_tag(p)) / "details.json",
}
PROPAGATION_RECORDS = ("train_prop", "eval_walk")  # <stage>@<method>: <outputs>/<stage>/<method>/<CAM method>


def metrics_file(params, stage: str):
    """The record ``stage`` writes (None when it writes none)."""
    module, _, name = stage.partition("@")
    if name:
        return prop_dir(params, module, name) / "details.json" if module in PROPAGATION_RECORDS else None
    return METRIC_FILES[stage](params) if stage in METRIC_FILES else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", required=True, help="paths.outputs for this run")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--stages", nargs="+", required=True)
    parser.add_argument("--summary", help="append the JSON summary to this file")
    args = parser.parse_args()
    overrides = [f"paths.outputs={args.out}", *args.overrides]
    params = load_params(args.params, overrides)
    summary = {"overrides": overrides, "stages": {}}
    for stage in args.stages:
        start = time.perf_counter()
        module, _, name = stage.partition("@")
        importlib.import_module(f"stages.{module}").run(params, *([name] if name else []))
        seconds = time.perf_counter() - start
        entry = {"seconds": round(seconds, 1)}
        record = metrics_file(params, stage)
        if record is not None and record.is_file():
            entry["metrics"] = json.loads(record.read_text())
        summary["stages"][stage] = entry
        print(json.dumps({stage: {k: v for k, v in entry.items() if k == "seconds"} |
                          {k: v for k, v in entry.get("metrics", {}).items() if "miou" in k}}), flush=True)
    summary["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.summary:
        with open(args.summary, "a") as fh:
            fh.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
