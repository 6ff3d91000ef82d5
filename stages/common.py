"""What every stage shares: output locations, the dataset index, progress bars, process pools, resumable
and sharded outputs."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from pipeline.errors import DataError, WsssError
from pipeline.io import read_json
from pipeline.processes import die_with_parent, process_map
from stages.config import Params

T = TypeVar("T")
R = TypeVar("R")


def stage_dir(params: Params, stage: str, method: str | None = None) -> Path:
    """outputs/<stage>[/<method>]: one directory per stage (per method where methods coexist)."""
    path = Path(params.paths.outputs) / stage
    return path / method if method else path


def index_path(params: Params) -> Path:
    return stage_dir(params, "data") / "index.json"


def load_index(params: Params) -> dict:
    path = index_path(params)
    if not path.is_file():
        raise DataError(f"{path}: dataset index not found; run `wsss-pipe data` first")
    index = read_json(path)
    if Path(index["root"]).resolve() != Path(params.data.root).resolve():
        raise DataError(f"{path}: indexes {index['root']}, not data.root={params.data.root}; rerun `wsss-pipe data`")
    return index


def open_split(params: Params, split: str):
    """(VOCDataset of ``split`` with the index's labels, index dict)."""
    from pipeline.data.voc import VOCDataset

    index = load_index(params)
    if split not in index["splits"]:
        raise DataError(f"{index_path(params)}: split {split!r} is not indexed; check data.*_split")
    labels = index["splits"][split]["labels"]
    return VOCDataset(params.data.root, split, labels=labels), index


def num_workers(params: Params) -> int:
    """``workers``; 0 = all cores, shared among the processes torchrun started on this machine."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return params.workers or max(1, (os.cpu_count() or 1) // local)


def progress_bar(description: str) -> Progress:
    """A rich progress bar, silent when stderr is not a terminal (CI, DVC logs)."""
    return Progress(
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not sys.stderr.isatty(),
        transient=False,
    )


def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    with progress_bar(description) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int, description: str,
                 chunksize: int = 4) -> Iterator[R]:
    """``map(fn, items)`` over ``workers`` processes (in-process when 1), in order, with progress; on an
    error or interrupt the workers are stopped and waited for (:func:`pipeline.processes.process_map`)."""
    if workers <= 1 or len(items) <= 1:
        yield from track(map(fn, items), len(items), description)
        return
    yield from track(process_map(fn, items, workers, chunksize), len(items), description)


def require(path: Path, hint: str) -> Path:
    if not path.exists():
        raise WsssError(f"{path}: not found; {hint}")
    return path


def _confusion_chunk(job: tuple) -> tuple[np.ndarray, int, int]:
    root, split, ids, mask_dir, num_classes = job
    from pipeline.data.voc import VOCDataset
    from pipeline.io import load_mask
    from pipeline.metrics import confusion_matrix

    dataset = VOCDataset(root, split, labels={i: [] for i in ids})
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    ignored = total = 0
    for image_id in ids:
        pred = load_mask(Path(mask_dir) / f"{image_id}.png")
        gt = dataset.load_mask(image_id)
        if pred.shape != gt.shape:
            raise DataError(f"{mask_dir}/{image_id}.png: size {pred.shape} differs from its ground truth {gt.shape}")
        conf += confusion_matrix(pred, gt, num_classes)
        ignored += int((pred == 255).sum())
        total += pred.size
    return conf, ignored, total


def evaluate_mask_dir(dataset, mask_dir: Path, num_classes: int, workers: int,
                      description: str) -> tuple[np.ndarray, float]:
    """Confusion matrix of the palette PNGs in ``mask_dir`` against ``dataset``'s ground truth, and the
    fraction of predicted pixels left as ignore (255, counted as background in the confusion). Under
    torchrun each rank reads its shard and every rank gets the totals."""
    from pipeline import distributed

    distributed.setup(torch.device("cpu"))
    ids = distributed.shard(dataset.ids)
    chunks = [ids[i::workers * 4] for i in range(workers * 4)]
    jobs = [(str(dataset.root), dataset.split, ids, str(mask_dir), num_classes) for ids in chunks if ids]
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    ignored = total = 0
    for part, part_ignored, part_total in parallel_map(_confusion_chunk, jobs, workers, description, chunksize=1):
        conf += part
        ignored += part_ignored
        total += part_total
    conf, ignored, total = distributed.sum_over_ranks((conf, ignored, total))
    return conf, ignored / max(total, 1)


def iou_report(conf: np.ndarray, class_names: list[str]) -> dict:
    """mIoU, pixel accuracy and per-class IoU (null for classes absent from ground truth and prediction)."""
    from pipeline.metrics import iou_per_class, mean_iou, pixel_accuracy

    iou = iou_per_class(conf)
    return {
        "miou": round(mean_iou(conf), 6),
        "pixel_accuracy": round(pixel_accuracy(conf), 6),
        "per_class_iou": {n: (None if np.isnan(v) else round(float(v), 6)) for n, v in zip(class_names, iou)},
    }


def write_eval(out: Path, metrics: dict) -> None:
    """:func:`write_metrics` of an evaluation and ``per_class.csv`` (class, iou) with
    ``metrics["per_class_iou"]``, for the report and `dvc plots` (per-class IoU is never in the metrics)."""
    import csv

    from pipeline.io import atomic_path
    from stages.records import write_metrics

    write_metrics(out, {k: v for k, v in metrics.items() if k != "per_class_iou"})
    with atomic_path(out / "per_class.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "iou"])
        writer.writerows([[name, "" if iou is None else iou] for name, iou in metrics["per_class_iou"].items()])


def training_loader(samples, cfg, generator: torch.Generator, device: torch.device):
    """Shuffled, seeded DataLoader of ``samples`` with the batch size and workers of a training section;
    the last incomplete batch is dropped when there is more than one batch (BatchNorm needs > 1 sample).
    The order and each sample's augmentation depend only on (seed, epoch, index)
    (:class:`pipeline.distributed.EpochSampler`, :class:`~pipeline.distributed.SeededSamples`); under
    torchrun ``batch_size`` is the global batch, each rank loading its share."""
    from torch.utils.data import DataLoader

    from pipeline import distributed

    seed = generator.initial_seed()
    sampler = distributed.EpochSampler(len(samples), cfg.batch_size, seed, distributed.world_size(),
                                       distributed.rank())
    loader = DataLoader(distributed.SeededSamples(samples, seed), batch_size=sampler.local_batch,
                        sampler=sampler, num_workers=cfg.loader_workers, generator=generator,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.loader_workers > 0,
                        worker_init_fn=_die_with_parent if cfg.loader_workers > 0 else None)
    if len(samples) == 0:
        raise DataError(f"no training samples: the split {getattr(samples.dataset, 'split', '')!r} is empty")
    return loader


def _die_with_parent(_: int) -> None:
    die_with_parent()


def run_key(params: Params, sections: Sequence[str], inputs: Sequence[Path] = ()) -> str:
    """A short hash of the params ``sections`` (dotted: ``methods.seam``) and of the ``inputs`` (files,
    or directories taken whole: names, sizes, modification times) a stage reads, and of the package's source
    (:func:`pipeline.engine.code_version.code_digest`): resume state and partial outputs are reused only by a
    run with the same key, so never after a code change."""
    import hashlib
    import json

    from pipeline.engine.code_version import code_digest

    dump = params.model_dump(mode="json")
    chosen = {}
    for dotted in sections:
        node = dump
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        chosen[dotted] = node
    digest = hashlib.sha256(json.dumps(chosen, sort_keys=True).encode())
    digest.update(code_digest().encode())
    for path in inputs:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            info = file.stat()
            digest.update(f"{file.relative_to(path.parent)}:{info.st_size}:{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def resume_path(params: Params, stage: str, method: str | None, key: str) -> Path:
    """<outputs>/.resume/<stage>/<method>/<key>.pt: outside the stage's output (DVC never sees it)."""
    return Path(params.paths.outputs) / ".resume" / stage / (method or "") / f"{key}.pt"


def clear_resume(path: Path, keep: bool = False) -> None:
    """Remove the resume files of this stage (all keys; all but ``path`` when ``keep``) and the directories
    left empty. Rank 0 only."""
    from pipeline import distributed

    if not distributed.is_main():
        return
    for stale in path.parent.glob("*.pt"):
        if not (keep and stale == path):
            stale.unlink(missing_ok=True)
            if keep:
                print(f"{stale}: discarded, written by a run with other params, inputs or code", file=sys.stderr)
    for directory in [path.parent, *path.parent.parents]:
        try:
            directory.rmdir()
        except OSError:
            break
        if directory.name == ".resume":
            break


@contextlib.contextmanager
def resumable_output(path: Path, key: str) -> Iterator[Path]:
    """The work directory of a per-image stage's output ``path`` (:func:`pipeline.io.atomic_dir` with
    ``key``): files finished by an earlier killed run of the same key are kept, the directory is published
    whole once every rank is done. Under torchrun every rank writes its shard (:func:`todo`) into the
    shared directory and rank 0 publishes it after a barrier."""
    from pipeline import distributed
    from pipeline.io import atomic_dir, partial_dir

    distributed.setup(torch.device("cpu"))  # under torchrun: join the group (gloo) if no stage did yet
    if distributed.is_main():
        with atomic_dir(path, key=key) as work:
            distributed.barrier()  # the work directory exists
            yield from _all_ranks(work)
    else:
        distributed.barrier()
        yield from _all_ranks(partial_dir(path, key))
    distributed.barrier()  # published


@contextlib.contextmanager
def shared_output(path: Path) -> Iterator[Path]:
    """:func:`pipeline.io.atomic_dir` shared by every torchrun rank: rank 0 makes the temporary directory,
    every rank writes its images into it, rank 0 publishes it once all are done (in one process: plain
    ``atomic_dir``)."""
    from pipeline import distributed
    from pipeline.io import atomic_dir

    distributed.setup(torch.device("cpu"))
    if distributed.is_main():
        with atomic_dir(path) as work:
            distributed.broadcast_object(str(work))
            yield from _all_ranks(work)
    else:
        yield from _all_ranks(Path(distributed.broadcast_object(None)))
    distributed.barrier()  # published


def _all_ranks(work: Path) -> Iterator[Path]:
    from pipeline import distributed

    try:
        yield work
    except BaseException:
        distributed.all_ok(False)
        raise
    if not distributed.all_ok(True):
        raise WsssError(f"{work}: another process failed; the finished files are kept for the next run")


def todo(ids: Sequence[str], work: Path, suffix: str) -> list[str]:
    """This rank's ids (``ids[rank::world]``) whose ``<id><suffix>`` is not in ``work`` yet (a file there
    is complete: files are renamed into place)."""
    from pipeline import distributed

    mine = [i for i in distributed.shard(ids) if not (work / f"{i}{suffix}").exists()]
    if distributed.world_size() > 1:
        print(f"rank {distributed.rank()} of {distributed.world_size()}: {len(mine)} of {len(ids)} images to do",
              file=sys.stderr)
    return mine


def load_image_and_cam(image_path: str, cam_path: str,
                       num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, cams, keys) of one image, checking that the stored maps have the image's size and, given
    ``num_classes`` (background included), that every class key exists."""
    from pipeline.io import load_cam, load_image

    image = load_image(image_path)
    cams, keys = load_cam(cam_path, num_classes)
    if cams.shape[1:] != image.shape[:2]:
        raise WsssError(f"{cam_path}: size {cams.shape[1:]} differs from its image {image.shape[:2]}")
    return image, cams, keys
