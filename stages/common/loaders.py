"""Inputs of stages: the seeded training DataLoader and one image with its CAMs."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pipeline.engine.processes import die_with_parent
from pipeline.errors import DataError, WsssError

if TYPE_CHECKING:
    import torch


def training_loader(samples, cfg, generator: torch.Generator, device: torch.device):
    """Shuffled, seeded DataLoader of ``samples`` with the batch size and workers of a training section;
    the last incomplete batch is dropped when there is more than one batch (BatchNorm needs > 1 sample).
    The order and each sample's augmentation depend only on (seed, epoch, index)
    (:class:`pipeline.engine.sampling.EpochSampler`, :class:`~pipeline.engine.sampling.SeededSamples`); under
    torchrun ``batch_size`` is the global batch, each rank loading its share."""
    from torch.utils.data import DataLoader

    from pipeline.engine import distributed
    from pipeline.engine.sampling import EpochSampler, SeededSamples

    seed = generator.initial_seed()
    sampler = EpochSampler(len(samples), cfg.batch_size, seed, distributed.world_size(), distributed.rank())
    loader = DataLoader(SeededSamples(samples, seed), batch_size=sampler.local_batch,
                        sampler=sampler, num_workers=cfg.loader_workers, generator=generator,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.loader_workers > 0,
                        worker_init_fn=_die_with_parent if cfg.loader_workers > 0 else None)
    if len(samples) == 0:
        raise DataError(f"no training samples: the split {getattr(samples.dataset, 'split', '')!r} is empty")
    return loader


def _die_with_parent(_: int) -> None:
    die_with_parent()


def load_image_and_cam(image_path: str, cam_path: str,
                       num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, cams, keys) of one image, checking that the stored maps have the image's size and, given
    ``num_classes`` (background included), that every class key exists."""
    from pipeline.cam.archive import load_cam
    from pipeline.data.image_files import load_image

    image = load_image(image_path)
    cams, keys = load_cam(cam_path, num_classes)
    if cams.shape[1:] != image.shape[:2]:
        raise WsssError(f"{cam_path}: size {cams.shape[1:]} differs from its image {image.shape[:2]}")
    return image, cams, keys
