"""CPU seconds per DeepLab training step (forward, backward, SGD update) by crop size, output stride and head.

    python benchmarks/deeplab_step_cost.py --crops 96 128 --strides 16 8 --heads v3 v2

Random inputs and labels on the ImageNet-initialised backbone, one torch thread (the per-step cost that
train_seg's ``steps`` multiplies; the first step is not timed). Used to size the demo's DeepLab schedule
(benchmarks/README.md, the demo sections).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from pipeline.models.backbones import build_backbone
from pipeline.segmentation.deeplab import build_deeplab


def step_cost(backbone: str, crop: int, output_stride: int, head: str, batch_size: int, steps: int) -> float:
    """Mean CPU seconds (process time) of one training step after a first, untimed one."""
    model = build_deeplab(build_backbone(backbone, output_stride, "imagenet"), 6, head=head).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.rand(batch_size, 3, crop, crop)
    labels = torch.randint(0, 6, (batch_size, crop, crop))
    for step in range(steps + 1):
        if step == 1:
            start = time.process_time()
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.process_time() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--crops", type=int, nargs="+", default=[96, 128])
    parser.add_argument("--strides", type=int, nargs="+", default=[16, 8])
    parser.add_argument("--heads", nargs="+", default=["v3"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for crop in args.crops:
        for stride in args.strides:
            for head in args.heads:
                seconds = step_cost(args.backbone, crop, stride, head, args.batch_size, args.steps)
                print(f"crop {crop} output stride {stride} head {head}: {seconds:.2f} CPU s per step", flush=True)


if __name__ == "__main__":
    main()
