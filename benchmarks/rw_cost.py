"""Wall time and peak memory of the `rw` stage's per-image work (AffinityNet features + sparse random walk)
on a VOC-sized input.

    python benchmarks/rw_cost.py [--height 375 --width 500 --grid-stride 8 --logt 6 --threads 1]

Each configuration runs in a fresh subprocess so its peak RSS (ru_maxrss) is its own; the model is the
default AffinityNet over EfficientNet-Lite0 (random weights: time and memory do not depend on them).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(height: int, width: int, grid_stride: int, logt: int, threads: int, repeats: int = 3) -> dict:
    import numpy as np
    import torch

    from pipeline.propagation.affinitynet.network import AffinityNet
    from pipeline.data.transforms import to_image_tensor
    from pipeline.models.backbones import build_backbone
    from pipeline.propagation.affinitynet.walk import propagate_cam

    torch.set_num_threads(threads)
    model = AffinityNet(build_backbone("efficientnet_lite0", 16, None), grid_stride=grid_stride).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    cams = rng.random((2, height, width)).astype(np.float32)
    keys = np.array([3, 8])
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            features = model(to_image_tensor(image)[None])[0]
        propagate_cam(cams, keys, features, logt=logt, radius=5, grid_stride=grid_stride)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n = features.shape[-2] * features.shape[-1]
    return {"input": f"{width}x{height}", "grid": f"{features.shape[-1]}x{features.shape[-2]}", "grid_stride": grid_stride,
            "logt": logt, "threads": threads, "seconds_best": round(min(times), 3),
            "peak_rss_mib": round(peak / 1024, 1), "rss_growth_mib": round((peak - baseline_rss) / 1024, 1),
            "dense_nxn_fp32_mib": round(n * n * 4 / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--grid-stride", type=int, nargs="+", default=[8, 4])
    parser.add_argument("--logt", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.height, args.width, args.grid_stride[0], args.logt, args.threads)))
        return
    for stride in args.grid_stride:
        cmd = [sys.executable, __file__, "--child", "--height", str(args.height), "--width", str(args.width),
               "--grid-stride", str(stride), "--logt", str(args.logt), "--threads", str(args.threads)]
        print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
