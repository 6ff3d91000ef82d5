"""CAM mIoU of a trained method's checkpoint read out two ways: as the method reads it (``cam()``: SEAM's
PCM output, CPN's PRCM output) and from the raw classifier on the last feature map (the CAM before any
refinement). By default every third MSRC train image, one scale, no flip: a quick diagnostic; ``--full``
reads every train image at the `cam` stage's scales (1, 0.5, 1.5, 2) with flips, the benchmark protocol.

    python benchmarks/readout.py bench_outputs/inv/seam_v2/train_cls/seam/model.pt [--full]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pipeline.cam.readout import multiscale_cam
from pipeline.data.transforms import to_image_tensor
from pipeline.data.voc import VOCDataset
from pipeline.metrics import ThresholdSweep
from stages.checkpoints import load_method


class RawClassifier(torch.nn.Module):
    """The method's 1x1 classifier applied to the backbone's last feature map."""

    def __init__(self, method: torch.nn.Module):
        super().__init__()
        self.method = method

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        return self.method.classifier(self.method.backbone(images)[-1])


def best_miou(model, dataset: VOCDataset, ids: list[str], scales: tuple[float, ...] = (1.0,),
              flip: bool = False) -> tuple[float, float]:
    thresholds = np.round(np.arange(0.0, 0.96, 0.01), 2)  # as eval_cam (0..0.95)
    sweep = ThresholdSweep(thresholds, len(dataset.class_names))
    for image_id in ids:
        keys = np.asarray(dataset.label_indices(image_id))
        image = to_image_tensor(dataset.load_image(image_id))
        cams = multiscale_cam(model, image, keys - 1, scales, flip).numpy()
        sweep.update(cams, keys, dataset.load_mask(image_id))
    curve = sweep.miou_curve()
    best = int(np.nanargmax(curve))
    return float(curve[best]), float(thresholds[best])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--root", default="../shared/data/msrc_objects")
    parser.add_argument("--full", action="store_true", help="all train images, scales 1/0.5/1.5/2 + flip")
    args = parser.parse_args()
    method, _ = load_method(args.checkpoint, torch.device("cpu"))
    dataset = VOCDataset(args.root, "train")
    ids = dataset.ids if args.full else dataset.ids[::3]
    protocol = ((1.0, 0.5, 1.5, 2.0), True) if args.full else ((1.0,), False)
    with torch.no_grad():
        for name, model in (("method read-out", method), ("raw classifier", RawClassifier(method))):
            miou, threshold = best_miou(model, dataset, ids, *protocol)
            print(f"{args.checkpoint}  {name}: mIoU {100 * miou:.1f} at threshold {threshold:.2f}")


if __name__ == "__main__":
    main()
