"""Training samplers for torchrun: each rank's slice of every global batch, in an order that depends on
(seed, epoch) only, and each sample's augmentation seeded from (seed, epoch, index) (used by
:func:`stages.common.loaders.training_loader`; the process group is :mod:`pipeline.engine.distributed`)."""
from __future__ import annotations

import hashlib
from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class EpochSampler(Sampler):
    """Shuffled sample order that depends on (seed, epoch) only, sliced for this rank, yielding
    ``(epoch, index)`` pairs for :class:`SeededSamples`.

    Each epoch is a permutation of the ``n`` samples cut into global batches of ``batch_size`` (the last
    incomplete one dropped when there is more than one batch: batch norm needs > 1 sample); rank ``r`` of
    ``world`` takes positions ``r, r + world, ...`` of every global batch, in batches of
    ``batch_size / world``, so the union of the ranks' batches is the single-process batch.
    ``set_epoch(epoch, skip_batches)`` starts an epoch part-way (resume) without loading the skipped
    samples; iterating without ``set_epoch`` moves on to the next epoch (a fresh shuffle each pass).
    """

    def __init__(self, n: int, batch_size: int, seed: int, world: int = 1, rank: int = 0):
        if batch_size % world:
            from pipeline.errors import ConfigError

            raise ConfigError(f"batch_size={batch_size} is the global batch and must be divisible by the "
                              f"{world} processes")
        if 0 < n < world:
            from pipeline.errors import DataError

            raise DataError(f"{n} training samples cannot be shared among {world} processes")
        self.n, self.batch_size, self.seed, self.world, self.rank = n, batch_size, seed, world, rank
        self.local_batch = batch_size // world
        self.epoch, self.skip = 0, 0
        self.used = len(self.order(0)) if n else 0

    def order(self, epoch: int) -> list[int]:
        """The global order of epoch ``epoch``: every sample used once, in global batches."""
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1))
        perm = torch.randperm(self.n, generator=generator).tolist()
        if self.n > self.batch_size:
            perm = perm[: self.n // self.batch_size * self.batch_size]
        return perm

    def batches_per_epoch(self) -> int:
        return -(-self.used // self.batch_size)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def __len__(self) -> int:
        return len(range(self.rank, self.used, self.world))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = self.epoch, self.skip
        self.epoch, self.skip = epoch + 1, 0
        mine = self.order(epoch)[self.rank :: self.world]
        for index in mine[skip * self.local_batch :]:
            yield epoch, index


class SeededSamples(Dataset):
    """``samples[index]`` with torch's random state seeded from (seed, epoch, index): the augmentation of
    a sample is the same whichever rank, loader worker or resumed run draws it."""

    def __init__(self, samples: Dataset, seed: int):
        self.samples, self.seed = samples, seed

    def __len__(self) -> int:
        return len(self.samples)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.samples[index]
