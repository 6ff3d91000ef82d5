"""What train_seg's augmentation shows the network, per ``train_seg.scale_reference``: the factor each image
is resized by (eval_seg reads images at 0.5-1.5 of their own size, mean 1.0) and the share of each training
crop that is padding (label 255, no gradient).

    python benchmarks/seg_crop_stats.py --root ../shared/data/msrc_objects --crop 160
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from torchvision import tv_tensors

from pipeline.data.voc import VOCDataset
from pipeline.segmentation.training import segmentation_train_transform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--crop", type=int, default=160)
    parser.add_argument("--scale-min", type=float, default=0.5)
    parser.add_argument("--scale-max", type=float, default=1.5)
    args = parser.parse_args()
    dataset = VOCDataset(args.root, args.split)
    for reference in ("crop", "image"):
        torch.manual_seed(0)
        transform = segmentation_train_transform(args.crop, args.scale_min, args.scale_max, 0.0, reference)
        rescale = transform.transforms[0]
        factors, padded = [], []
        for image_id in dataset.ids:
            height, width = dataset.load_image(image_id).shape[:2]
            image = tv_tensors.Image(torch.zeros(3, height, width, dtype=torch.uint8))
            mask = tv_tensors.Mask(torch.zeros(height, width, dtype=torch.uint8))
            factors.append(rescale(image, mask)[0].shape[-1] / width)
            padded.append(float((transform(image, mask)[1] == 255).float().mean()))
        factors = np.array(factors)
        print(f"scale_reference={reference}: image resized by {factors.mean():.2f} on average "
              f"({factors.min():.2f}-{factors.max():.2f}); padding = {np.mean(padded):.0%} of a crop")


if __name__ == "__main__":
    main()
