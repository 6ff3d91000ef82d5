"""Throughput of the scale-out paths on this machine (issue 13's benchmark), on real photos.

    python benchmarks/throughput.py [--data ../shared/data/msrc_objects] [--out bench_outputs/throughput]
                                    [--only train_cls cam crf] [--summary benchmarks/results/throughput.jsonl]

- train_cls: one epoch (pretrained Lite0, crop 224, global batch 16) as one process with every core, and
  under `torchrun --nproc_per_node 2` (gloo, one thread per process: torchrun's default); steps/s of each.
- cam: the stage's images/s (decode-ahead loader and write-behind pool, `cam.loader_workers` /
  `cam.writers` at their defaults, and both at 0), against the bare forward of the same method at the same
  scales and flips on images already decoded in memory, no writing (the upper bound; aim: >= 0.8 of it).
- crf: the stage with `workers=1` and `workers=2` (aim: >= 1.8x on 2 cores), background threshold 0.47
  (the CAM baseline's best: no eval_cam needed).

Every stage runs in a subprocess through `benchmarks/run_stages.py` (the stage's `run`, timed inside the
process: interpreter and torch start-up excluded); torchrun launches `python -m stages <stage>`; the
training figures come from the stage's own `seconds`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stage(name: str, out: Path, data: Path, *sets: str, torchrun: int = 0, threads: int | None = None) -> float:
    """Run one stage in a subprocess; return its wall seconds inside the process (interpreter and torch
    start-up excluded: `benchmarks/run_stages.py` times it) or, under torchrun, of the whole launch."""
    items = [f"paths.outputs={out}", f"data.root={data}", "backbone.name=efficientnet_lite0",
             "backbone.pretrained=imagenet", "backbone.output_stride=16", "train_cls.crop_size=224",
             "train_cls.batch_size=16",
             "train_cls.epochs=1", "train_cls.resume_every=0", *sets]
    sets_args = [arg for item in items for arg in ("--set", item)]
    if torchrun:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
                   "-m", "stages", name, "-p", str(REPO / "params.yaml"), *sets_args]
    else:
        module = name.replace("-", "_")
        command = [sys.executable, str(REPO / "benchmarks" / "run_stages.py"), "--params", str(REPO / "params.yaml"),
                   "--out", str(out), *sets_args, "--stages", module]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("WSSS_TORCHRUN", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{name} failed:\n{result.stderr[-3000:]}")
    if torchrun:
        return time.perf_counter() - start
    return json.loads(result.stdout.strip().splitlines()[-1])[name.replace("-", "_")]["seconds"]


def bare_cam_forward(out: Path, data: Path) -> tuple[float, int]:
    """Seconds and image count of the method's multi-scale + flip forward alone over the train split."""
    import numpy as np
    import torch

    from pipeline.cam.readout import multiscale_cam
    from pipeline.data.transforms import to_image_tensor
    from stages.checkpoints import load_method
    from stages.common import open_split
    from stages.config import load_params

    params = load_params(REPO / "params.yaml", [f"paths.outputs={out}", f"data.root={data}"])
    method, _ = load_method(out / "train_cls" / "cam" / "model.pt", torch.device("cpu"))
    dataset, index = open_split(params, params.data.train_split)
    labels = index["splits"][params.data.train_split]["labels"]
    images = [(to_image_tensor(dataset.load_image(i)), np.asarray(labels[i]) - 1) for i in dataset.ids]
    start = time.perf_counter()
    for image, keys in images:
        multiscale_cam(method, image, keys, params.cam.scales, params.cam.flip)
    return time.perf_counter() - start, len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "msrc_objects")
    parser.add_argument("--out", type=Path, default=REPO / "bench_outputs" / "throughput")
    parser.add_argument("--only", nargs="+", default=["train_cls", "cam", "crf"])
    parser.add_argument("--summary", type=Path)
    args = parser.parse_args()
    out, data = args.out.resolve(), args.data.resolve()
    record: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                    "data": str(args.data)}
    stage("data", out, data)
    metrics = lambda: json.loads((out / "train_cls" / "cam" / "metrics.json").read_text())  # noqa: E731
    if "train_cls" in args.only or not (out / "train_cls" / "cam" / "model.pt").is_file():
        steps = len(json.loads((out / "data" / "index.json").read_text())["splits"]["train"]["labels"]) // 16
        stage("train-cls", out, data, torchrun=2)
        two = metrics()["seconds"]
        stage("train-cls", out, data)
        one = metrics()["seconds"]
        record["train_cls"] = {"steps": steps, "steps_per_s_1_process": round(steps / one, 3),
                               "steps_per_s_2_processes": round(steps / two, 3), "speedup": round(one / two, 2)}
        print(json.dumps({"train_cls": record["train_cls"]}), flush=True)
    if "cam" in args.only:
        bare, count = bare_cam_forward(out, data)
        inline = stage("cam", out, data, "cam.loader_workers=0", "cam.writers=0")
        streamed = stage("cam", out, data)
        record["cam"] = {"images": count, "bare_forward_images_per_s": round(count / bare, 3),
                         "stage_images_per_s_inline": round(count / inline, 3),
                         "stage_images_per_s_streamed": round(count / streamed, 3),
                         "streamed_over_bare": round(bare / streamed, 3)}
        print(json.dumps({"cam": record["cam"]}), flush=True)
    if "crf" in args.only:
        if not (out / "cam" / "cam").is_dir():
            stage("cam", out, data)
        one = stage("crf", out, data, "workers=1", "crf.bg_threshold=0.47")
        two = stage("crf", out, data, "workers=2", "crf.bg_threshold=0.47")
        record["crf"] = {"seconds_1_worker": round(one, 1), "seconds_2_workers": round(two, 1),
                         "speedup": round(one / two, 2)}
        print(json.dumps({"crf": record["crf"]}), flush=True)
    if args.summary:
        with open(args.summary, "a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
