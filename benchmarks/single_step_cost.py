"""Seconds per training step of the single-stage losses side by side (issue 11: the regulariser should add
<= 30% to a pCE step; rloss: 1.66 s vs 1.05 s), on one fixed batch so that nothing but the loss differs.

    python benchmarks/single_step_cost.py [--batch 8 --crop 160 --steps 12 --threads 2]

Model: the single stage's DeepLab-v3 over pretrained-architecture EfficientNet-Lite0 (random weights: the
time does not depend on them); batch of random images with 3% of the pixels labelled (scribble-like) and
the rest 255. Each loss runs `steps` SGD steps after 3 warm-up steps; the median step is reported.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch


def step_seconds(loss: str, crf_scale: float, batch: int, crop: int, steps: int) -> float:
    from pipeline.models.backbones import build_backbone
    from pipeline.segmentation.single_stage import SingleStageLoss, SingleStageModel

    torch.manual_seed(0)
    model = SingleStageModel(build_backbone("efficientnet_lite0", 16, None), 16,
                             embed_dim=64 if loss == "dfr" else None).train()
    objective = SingleStageLoss(supervision="scribble", loss=loss, crf_scale=crf_scale, deep_warmup_steps=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.rand(batch, 3, crop, crop)
    labels = torch.full((batch, crop, crop), 255, dtype=torch.long)
    chosen = torch.rand(batch, crop, crop) < 0.03
    labels[chosen] = torch.randint(0, 16, (int(chosen.sum()),))
    roi = torch.ones(batch, crop, crop)
    image_labels = torch.zeros(batch, 15)
    times = []
    for step in range(steps + 3):
        start = time.perf_counter()
        terms = objective(model, images, labels, roi, image_labels, step)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=160)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--summary")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [("pce", 0.25), ("crf", 0.25), ("dfr", 0.25), ("crf", 0.5), ("dfr", 0.5)]
    record = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {args.threads} threads",
              "batch": args.batch, "crop": args.crop, "seconds_per_step": {}}
    for loss, scale in rows:
        seconds = step_seconds(loss, scale, args.batch, args.crop, args.steps)
        record["seconds_per_step"][f"{loss}@{scale:g}" if loss != "pce" else "pce"] = round(seconds, 3)
        print(json.dumps({"loss": loss, "crf_scale": scale, "seconds_per_step": round(seconds, 3)}), flush=True)
    base = record["seconds_per_step"]["pce"]
    record["overhead_vs_pce"] = {k: round(v / base - 1, 3) for k, v in record["seconds_per_step"].items() if k != "pce"}
    print(json.dumps(record["overhead_vs_pce"]))
    if args.summary:
        with open(args.summary, "a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
