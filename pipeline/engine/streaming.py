"""Keeping a device busy in a per-image stage: images decoded ahead in DataLoader worker processes, results
compressed and written behind by a pool of threads, while the network runs on the current image.

zlib (``np.savez_compressed``) and PNG encoding release the GIL, so writer threads overlap with the
forward pass; decoding runs in separate processes. The order of the results, and so every output byte, is
the same as inline processing.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.data.transforms import to_image_tensor
from pipeline.errors import DataError, WsssError


class _Images(Dataset):
    def __init__(self, load: Callable[[str], np.ndarray], ids: Sequence[str]):
        self.load, self.ids = load, list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor | None, str | None]:
        image_id = self.ids[index]
        try:
            return image_id, to_image_tensor(self.load(image_id)), None
        except WsssError as exc:  # re-raised by the consumer: the one-line message, not a worker traceback
            return image_id, None, str(exc)


def _worker_init(_: int) -> None:
    """One torch thread; die with the stage (a SIGKILLed ``cam`` leaves no decoding workers behind)."""
    from pipeline.engine.processes import die_with_parent

    torch.set_num_threads(1)
    die_with_parent()


def stream_images(load: Callable[[str], np.ndarray], ids: Sequence[str], workers: int,
                  device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
    """``(id, image (3, H, W) float in [0, 1] on device)`` for ``ids`` in order, ``load(id)`` (an (H, W, 3)
    uint8 array) run by ``workers`` DataLoader processes ahead of the consumer (0: in this process)."""
    loader = DataLoader(_Images(load, ids), batch_size=None, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", worker_init_fn=_worker_init if workers else None,
                        prefetch_factor=4 if workers else None)
    for image_id, image, error in loader:
        if error is not None:
            raise DataError(error)
        yield image_id, image.to(device, non_blocking=True)


class BackgroundWriter:
    """``submit(fn, *args)`` runs ``fn(*args)`` on one of ``threads`` threads (inline when 0), with at most
    ``2 * threads`` writes pending: the producer waits rather than holding a dataset's results in memory.
    A failed write raises in the producer at the next ``submit`` or at ``close``; leaving the ``with``
    block on an error cancels the writes not yet started (finished files are complete: writes are atomic).
    """

    def __init__(self, threads: int):
        self.threads = threads
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="writer") if threads else None
        self.pending: deque[Future] = deque()

    def submit(self, fn: Callable, *args) -> None:
        if self.pool is None:
            fn(*args)
            return
        while len(self.pending) >= 2 * self.threads:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(fn, *args))

    def close(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.pool is None:
            return
        if exc_type is None:
            try:
                self.close()
            finally:
                self.pool.shutdown(wait=True)
        else:
            self.pool.shutdown(wait=True, cancel_futures=True)
