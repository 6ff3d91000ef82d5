"""A/B: a training step of the demo's DeepLab (tiny CNN, output stride 8, v3 head, batch 8, 96 px) with the
atrous branches skipping their dead taps (new) and computing them (old), interleaved, 5 x 20 steps each.

    python benchmarks/atrous_step.py
"""
import time, statistics, torch
from torch import nn
from pipeline.models.backbones import build_backbone
from pipeline.segmentation.deeplab import AtrousConv2d, build_deeplab
torch.manual_seed(0)
model = build_deeplab(build_backbone("tiny", 8, "none"), 6, head="v3")
x = torch.randn(8, 3, 96, 96); y = torch.randint(0, 6, (8, 96, 96))
opt = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9)
fast = AtrousConv2d.forward
def steps(n=20):
    t = time.perf_counter()
    for _ in range(n):
        opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
    return (time.perf_counter() - t) / n * 1000
times = {"old": [], "new": []}
steps(5)
for _ in range(5):
    for name in ("old", "new"):
        AtrousConv2d.forward = nn.Conv2d.forward if name == "old" else fast
        times[name].append(steps())
for name, ms in times.items():
    print(f"{name}: median {statistics.median(ms):.1f} ms/step (min {min(ms):.1f}, max {max(ms):.1f})")
