"""Pseudo-mask mIoU of CAM + dense CRF over a grid of CRF settings, on all MSRC train images.

Each configuration runs the `crf` stage's own function (`pipeline.pseudo_masks.crf.cam_to_pseudo_mask`) on the CAMs of
`bash benchmarks/msrc.sh cam-baseline` and scores it against the real masks; one JSON line per
configuration goes to --summary. Settings not swept are the params.yaml defaults.

    python benchmarks/crf_sweep.py --cams bench_outputs/msrc/cam/cam --bg 0.40 0.47 \
        --sxy 32 50 --srgb 3 5 --compat 10 [--summary benchmarks/results/crf_sweep.jsonl]
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import time

import numpy as np

from pipeline.cam.archive import load_cam
from pipeline.data.voc import VOCDataset
from pipeline.metrics import confusion_matrix, mean_iou
from pipeline.pseudo_masks.crf import cam_to_pseudo_mask

_STATE: dict = {}


def _init(root: str, cams: str) -> None:
    _STATE["dataset"] = VOCDataset(root, "train")
    _STATE["cams"] = cams


def _confusion(args: tuple[str, dict]) -> np.ndarray:
    image_id, settings = args
    dataset = _STATE["dataset"]
    cams, keys = load_cam(f"{_STATE['cams']}/{image_id}.npz")
    mask = cam_to_pseudo_mask(dataset.load_image(image_id), cams, keys, **settings)
    return confusion_matrix(mask, dataset.load_mask(image_id), dataset.num_classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cams", default="bench_outputs/msrc/cam/cam")
    parser.add_argument("--root", default="../shared/data/msrc_objects")
    parser.add_argument("--bg", type=float, nargs="+", default=[0.47], help="background thresholds")
    parser.add_argument("--sxy", type=float, nargs="+", default=[50.0], help="bilateral sxy (pixels)")
    parser.add_argument("--srgb", type=float, nargs="+", default=[5.0], help="bilateral srgb")
    parser.add_argument("--compat", type=float, nargs="+", default=[10.0], help="bilateral compat")
    parser.add_argument("--gauss-sxy", type=float, nargs="+", default=[3.0])
    parser.add_argument("--iterations", type=int, nargs="+", default=[10])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--summary", default=None)
    args = parser.parse_args()

    ids = VOCDataset(args.root, "train").ids
    num_classes = VOCDataset(args.root, "train").num_classes
    grid = itertools.product(args.bg, args.sxy, args.srgb, args.compat, args.gauss_sxy, args.iterations)
    with multiprocessing.Pool(args.workers, _init, (args.root, args.cams)) as pool:
        for bg, sxy, srgb, compat, gauss_sxy, iterations in grid:
            settings = {"bg_threshold": bg, "bilateral_sxy": sxy, "bilateral_srgb": srgb,
                        "bilateral_compat": compat, "gauss_sxy": gauss_sxy, "iterations": iterations}
            start = time.perf_counter()
            conf = np.zeros((num_classes, num_classes), np.int64)
            for part in pool.imap_unordered(_confusion, [(i, settings) for i in ids], chunksize=8):
                conf += part
            record = {**settings, "images": len(ids), "miou": round(float(mean_iou(conf)), 4),
                      "seconds": round(time.perf_counter() - start, 1)}
            print(json.dumps(record), flush=True)
            if args.summary:
                with open(args.summary, "a") as handle:
                    handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
