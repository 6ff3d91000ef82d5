"""Seconds per training step of a CAM method at a crop size and output stride (what the schedule of the
published 448 / stride-8 comparison would cost here).

    python benchmarks/cam_step_cost.py --crop 448 --output-stride 8 --method cam [--threads 1 --batch 16]

EfficientNet-Lite0 (random weights: the cost does not depend on them), a batch of random images and
multi-hot labels, `training_step` + backward + SGD; prints the seconds of each of `--steps` steps.
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=448)
    parser.add_argument("--output-stride", type=int, default=8)
    parser.add_argument("--method", default="cam")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    from pipeline.cam.methods import build_method
    from pipeline.models.backbones import build_backbone

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    method = build_method(args.method, build_backbone("efficientnet_lite0", args.output_stride, None), 15).train()
    optimizer = torch.optim.SGD(method.parameters(), lr=1e-3)
    images = torch.rand(args.batch, 3, args.crop, args.crop)
    labels = (torch.rand(args.batch, 15) < 0.2).float()
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = method.training_step(images, labels)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds.append(round(time.perf_counter() - start, 2))
    print(json.dumps({"method": args.method, "crop": args.crop, "output_stride": args.output_stride,
                      "batch": args.batch, "threads": args.threads, "seconds_per_step": seconds}))


if __name__ == "__main__":
    main()
