"""torch.distributed for the stages: process group from torchrun's environment, rank-aware sampling and
sharding.

Started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) a stage joins the process group on its
first :func:`setup` call: NCCL with one GPU per process (``cuda:LOCAL_RANK``) when CUDA is used, gloo
otherwise. Without torchrun every function here is the single-process identity (rank 0 of 1), so nothing
changes.

- Training (:func:`pipeline.engine.trainer.train`): DistributedDataParallel, SyncBatchNorm on CUDA where
  batch norm trains, and :class:`EpochSampler` handing every rank its slice of each *global* batch
  (``batch_size`` is the global batch, so the learning rate is the single-process one); rank 0 writes.
- Per-image stages: :func:`shard` gives rank ``r`` the ids ``ids[r::world]``; every rank writes into the
  stage's shared work directory and rank 0 publishes it after a :func:`barrier`. Evaluations sum their
  confusion matrices over the ranks (:func:`sum_over_ranks`) and rank 0 writes the metrics.
"""
from __future__ import annotations

import atexit
import hashlib
import os
from typing import Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

T = TypeVar("T")


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun (once); return the device of this rank: a CUDA
    device becomes ``cuda:LOCAL_RANK``."""
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        cuda = device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
        atexit.register(_leave)
    return device


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: ``items[rank::world]`` (all of them in a single process)."""
    return list(items[rank()::world_size()])


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (e.g. a resume state or a decision only rank 0 may take)."""
    if not active():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def collective_device() -> torch.device:
    """Where tensors of a collective must live: this rank's GPU on NCCL (which takes no CPU tensors), the
    CPU on gloo."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_share(count: torch.Tensor) -> torch.Tensor:
    """``world * count / (count summed over the ranks)``: the factor that turns this rank's mean over its
    ``count`` elements into its share of the mean over all the ranks' elements, once DistributedDataParallel
    averages the ranks' gradients (1 in a single process)."""
    if not active():
        return torch.ones((), device=count.device)
    total = count.detach().double().clone()
    dist.all_reduce(total)
    return (count.double() * world_size() / total.clamp(min=1)).float()


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Every value averaged over the ranks (the values themselves in a single process)."""
    if not active() or not values:
        return values
    names = sorted(values)
    totals = torch.tensor([values[name] for name in names], dtype=torch.float64, device=collective_device())
    dist.all_reduce(totals)
    return {name: total / world_size() for name, total in zip(names, totals.tolist())}


def sum_over_ranks(value):
    """``value`` (a NumPy array, a number, or a tuple of them, summed element-wise) summed over the ranks,
    on every rank. Object collectives, so that it works on the NCCL group a CUDA stage joined as on gloo
    (the arrays are small: confusion matrices)."""
    if not active():
        return value
    parts = [None] * world_size()
    dist.all_gather_object(parts, value)
    if isinstance(value, tuple):
        return tuple(_sum([part[i] for part in parts]) for i in range(len(value)))
    return _sum(parts)


def _sum(parts: list):
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def gather_to_main(items: list) -> list:
    """Every rank's ``items`` concatenated in rank order on rank 0 (the rank's own elsewhere)."""
    if not active():
        return items
    parts = [None] * world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part] if is_main() else items


def all_ok(ok: bool) -> bool:
    """True on every rank when ``ok`` is true on every rank: a failed rank makes the others stop too
    instead of waiting forever at the next barrier."""
    if not active():
        return ok
    flags = [None] * world_size()
    dist.all_gather_object(flags, bool(ok))
    return all(flags)


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
