"""torch.distributed for the stages: process group from torchrun's environment, sharding and collectives.

Started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) a stage joins the process group on its
first :func:`setup` call: NCCL with one GPU per process (``cuda:LOCAL_RANK``) when CUDA is used, gloo
otherwise. Without torchrun every function here is the single-process identity (rank 0 of 1), so nothing
changes.

- Training (:func:`pipeline.engine.trainer.train`): DistributedDataParallel, SyncBatchNorm on CUDA where
  batch norm trains, and :class:`~pipeline.engine.sampling.EpochSampler` handing every rank its slice of each
  *global* batch (``batch_size`` is the global batch, so the learning rate is the single-process one);
  rank 0 writes.
- Per-image stages: :func:`shard` gives rank ``r`` the ids ``ids[r::world]``; every rank writes into the
  stage's shared work directory and rank 0 publishes it after a :func:`barrier`. Evaluations sum their
  confusion matrices over the ranks (:func:`sum_over_ranks`) and rank 0 writes the metrics.

torch is imported only by a process that joins a group (:func:`setup` under torchrun) or works on tensors
(:func:`mean_share`): in a single process the stages that compute nothing with torch never import it (a
process group cannot exist before ``torch.distributed`` is imported). The training samplers are in
:mod:`pipeline.engine.sampling`.
"""
from __future__ import annotations

import atexit
import os
import sys
from typing import TYPE_CHECKING, Sequence, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device | str) -> torch.device | str:
    """Join the process group when launched by torchrun (once); return the device of this rank: a CUDA
    device becomes ``cuda:LOCAL_RANK`` (``device`` as given in a single process)."""
    if not launched():
        return device
    import torch
    import torch.distributed as dist

    device = torch.device(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        cuda = device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
        atexit.register(_leave)
    return device


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _group():
    """``torch.distributed`` when this process is one of several ranks of a process group, else None."""
    dist = sys.modules.get("torch.distributed")  # not imported: no group can have been joined
    if dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def active() -> bool:
    return _group() is not None


def world_size() -> int:
    dist = _group()
    return dist.get_world_size() if dist else 1


def rank() -> int:
    dist = _group()
    return dist.get_rank() if dist else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    dist = _group()
    if dist:
        dist.barrier()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: ``items[rank::world]`` (all of them in a single process)."""
    return list(items[rank()::world_size()])


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (e.g. a resume state or a decision only rank 0 may take)."""
    dist = _group()
    if not dist:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def collective_device() -> torch.device:
    """Where tensors of a collective must live: this rank's GPU on NCCL (which takes no CPU tensors), the
    CPU on gloo."""
    import torch

    dist = _group()
    if dist and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_share(count: torch.Tensor) -> torch.Tensor:
    """``world * count / (count summed over the ranks)``: the factor that turns this rank's mean over its
    ``count`` elements into its share of the mean over all the ranks' elements, once DistributedDataParallel
    averages the ranks' gradients (1 in a single process)."""
    import torch

    dist = _group()
    if not dist:
        return torch.ones((), device=count.device)
    total = count.detach().double().clone()
    dist.all_reduce(total)
    return (count.double() * world_size() / total.clamp(min=1)).float()


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Every value averaged over the ranks (the values themselves in a single process)."""
    dist = _group()
    if not dist or not values:
        return values
    import torch

    names = sorted(values)
    totals = torch.tensor([values[name] for name in names], dtype=torch.float64, device=collective_device())
    dist.all_reduce(totals)
    return {name: total / world_size() for name, total in zip(names, totals.tolist())}


def sum_over_ranks(value):
    """``value`` (a NumPy array, a number, or a tuple of them, summed element-wise) summed over the ranks,
    on every rank. Object collectives, so that it works on the NCCL group a CUDA stage joined as on gloo
    (the arrays are small: confusion matrices)."""
    dist = _group()
    if not dist:
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
    dist = _group()
    if not dist:
        return items
    parts = [None] * world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part] if is_main() else items


def all_ok(ok: bool) -> bool:
    """True on every rank when ``ok`` is true on every rank: a failed rank makes the others stop too
    instead of waiting forever at the next barrier."""
    dist = _group()
    if not dist:
        return ok
    flags = [None] * world_size()
    dist.all_gather_object(flags, bool(ok))
    return all(flags)
