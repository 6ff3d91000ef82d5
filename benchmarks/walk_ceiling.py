"""How far AffinityNet's random walk could lift a CAM on a dataset with masks: the walk of
:func:`pipeline.propagation.affinitynet.walk.propagate_cam` run with *perfect* affinities, i.e. features
that are the ground truth's one-hot labels averaged over each grid cell (x30, so cells of different
labels have affinity ~0), for each grid stride, pair set and walk length given. Prints the mIoU of each.

    python benchmarks/walk_ceiling.py --outputs outputs --data data/synthetic --threshold 0.35

``--outputs`` is a run's ``paths.outputs`` (its ``cam/<method>/*.npz``); ``--threshold`` eval_cam's best
threshold (the psa background power is calibrated to it, as ``bg_alpha: auto``). benchmarks/README.md,
issue 19 part 7, has the demo's figures.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pipeline.cam.archive import load_cam
from pipeline.data.image_files import load_mask
from pipeline.metrics import confusion_matrix, mean_iou
from pipeline.propagation.affinitynet.walk import alpha_for_threshold, propagate_cam


def oracle_features(mask: np.ndarray, num_classes: int, stride: int) -> torch.Tensor:
    """(C + 1, h, w): the share of each class (and of void) in each stride x stride cell, x30."""
    height, width = mask.shape
    channels = [(mask == c) for c in range(num_classes)] + [mask == 255]
    one_hot = np.stack(channels).astype(np.float32)
    one_hot = np.pad(one_hot, ((0, 0), (0, -height % stride), (0, -width % stride)))
    c, h, w = one_hot.shape
    cells = one_hot.reshape(c, h // stride, stride, w // stride, stride).mean(axis=(2, 4))
    return torch.from_numpy(cells * 30.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="VOC-layout root with SegmentationClass/")
    parser.add_argument("--method", default="cam")
    parser.add_argument("--threshold", type=float, required=True)
    parser.add_argument("--strides", type=int, nargs="+", default=[8, 4])
    parser.add_argument("--pair-sets", nargs="+", default=["psa", "full"])
    parser.add_argument("--logt", type=int, nargs="+", default=[3, 6])
    args = parser.parse_args()
    files = sorted((args.outputs / "cam" / args.method).glob("*.npz"))
    num_classes = len((args.data / "classes.txt").read_text().split())
    alpha = alpha_for_threshold(args.threshold)
    for stride in args.strides:
        for pair_set in args.pair_sets:
            for logt in args.logt:
                conf = np.zeros((num_classes, num_classes), dtype=np.int64)
                for path in files:
                    cams, keys = load_cam(path)
                    mask = load_mask(args.data / "SegmentationClass" / f"{path.stem}.png")
                    if len(keys):
                        labels, _ = propagate_cam(cams, keys, oracle_features(mask, num_classes, stride),
                                                  bg_alpha=alpha, beta=16, logt=logt, radius=5,
                                                  grid_stride=stride, pair_set=pair_set)
                    else:
                        labels = np.zeros_like(mask)
                    conf += confusion_matrix(labels, mask, num_classes)
                print(f"stride {stride}, pairs {pair_set}, 2^{logt} steps: walk with perfect affinities "
                      f"{100 * mean_iou(conf):.1f}", flush=True)


if __name__ == "__main__":
    main()
