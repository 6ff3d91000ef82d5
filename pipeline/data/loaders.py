"""torch Datasets over a :class:`~pipeline.data.voc.VOCDataset` for classifier and segmentation training."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.transforms import as_tv


class ClassificationSamples(Dataset):
    """(augmented image, multi-hot foreground labels) pairs; ``labels[id]`` = 1-based class indices."""

    def __init__(self, dataset, ids: Sequence[str], labels: dict[str, list[int]], num_fg: int, transform):
        self.dataset, self.ids, self.transform = dataset, list(ids), transform
        self.targets = np.zeros((len(self.ids), num_fg), dtype=np.float32)
        for row, image_id in enumerate(self.ids):
            for cls in labels[image_id]:
                self.targets[row, cls - 1] = 1.0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image = self.transform(as_tv(self.dataset.load_image(self.ids[index])))
        return image, torch.from_numpy(self.targets[index])


class SegmentationSamples(Dataset):
    """(augmented image, mask) pairs; masks come from ``mask_fn(id)`` (ground truth or pseudo masks)."""

    def __init__(self, dataset, ids: Sequence[str], mask_fn, transform):
        self.dataset, self.ids, self.mask_fn, self.transform = dataset, list(ids), mask_fn, transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        image, mask = self.transform(*as_tv(self.dataset.load_image(image_id), self.mask_fn(image_id)))
        return image, mask.long()
