"""Run wsss-pipe stages in order with parameter overrides, timing each, and print a JSON summary.

    python benchmarks/run_stages.py --out bench/msrc_cam --set data.root=../shared/data/msrc_objects \
        --stages data train_cls cam eval_cam walk@irn eval_walk@irn

A propagation stage is named as in dvc.yaml, ``<stage>@<propagation method>``. Each stage runs exactly as
`wsss-pipe <stage>` would (same params validation, same outputs); the summary gives the wall time and the
CPU seconds (user + sys, finished child processes included) of every stage and the metrics files each
wrote. Peak RSS of the process is reported too (ru_maxrss, includes children that finished).
"""
from __future__ import annotations

import argparse
import importlib
import json
import resource
import time

from stages.config import load_params
from stages.table import STAGES, resolve

# each stage's record (details.json; scribbles: stats.json), from the stage table
METRIC_FILES = {stage.name: (lambda p, t=stage.record: resolve(t, p)) for stage in STAGES.values() if stage.record}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (loader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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
        start, cpu_start = time.perf_counter(), cpu_seconds()
        module, _, name = stage.partition("@")
        importlib.import_module(f"stages.{module}").run(params, *([name] if name else []))
        seconds = time.perf_counter() - start
        entry = {"seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds() - cpu_start, 1)}
        if stage in METRIC_FILES and METRIC_FILES[stage](params).is_file():
            metrics = json.loads(METRIC_FILES[stage](params).read_text())
            entry["metrics"] = metrics
        summary["stages"][stage] = entry
        print(json.dumps({stage: {k: v for k, v in entry.items() if k.endswith("seconds")} |
                          {k: v for k, v in entry.get("metrics", {}).items() if "miou" in k}}), flush=True)
    summary["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.summary:
        with open(args.summary, "a") as fh:
            fh.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
