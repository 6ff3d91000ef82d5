"""The data half of ``wsss-pipe doctor``: a VOC-layout tree checked the way the pipeline will read it.

Every rule is the reader's own (:class:`pipeline.data.voc.VOCDataset`: split files, ``classes.txt``, image
decoding, mask size and values; :func:`pipeline.segmentation.scribbles.read_scribble` for ScribbleSup PNGs): the check
calls them for every id and collects their one-line errors instead of stopping at the first one, so a
broken tree is described whole, with at most ``limit`` lines per split.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.voc import VOCDataset, image_size
from pipeline.errors import DataError
from pipeline.segmentation.scribbles import SCRIBBLE_DIR, read_scribble


@dataclass
class SplitReport:
    split: str
    ids: int = 0
    images: int = 0  # readable images
    masks: int = 0  # masks present with the image's size and values in the classes
    labels_from: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass
class DataReport:
    root: str
    classes: list[str] = field(default_factory=list)
    classes_from: str = ""
    splits: list[SplitReport] = field(default_factory=list)
    scribbles: str = ""
    problems: list[str] = field(default_factory=list)  # every problem line, splits' included (capped)


def _check_image(dataset: VOCDataset, image_id: str, labels: bool) -> tuple[bool, bool, list[str]]:
    """(image readable, mask good, problems) of one id, by the reader's rules; ``labels``: check that a
    split without masks has the id's annotation."""
    problems = []
    try:
        image_size(dataset.image_path(image_id), decode=True)
        image_ok = True
    except DataError as exc:
        image_ok = False
        problems.append(str(exc))
    mask_ok = False
    if dataset.has_masks:
        try:
            dataset.load_mask(image_id)  # exists, decodes, values in the classes, the image's size
            mask_ok = True
        except DataError as exc:
            if str(exc) not in problems:  # a missing image is reported once
                problems.append(str(exc))
    elif labels:
        try:
            dataset.label_indices(image_id)  # labels from Annotations/<id>.xml
        except DataError as exc:
            problems.append(str(exc))
    return image_ok, mask_ok, problems


def check_split(root: Path, split: str, limit: int, workers: int) -> tuple[SplitReport, VOCDataset | None]:
    report = SplitReport(split)
    try:
        dataset = VOCDataset(root, split)
    except DataError as exc:
        report.problems.append(str(exc))
        return report, None
    report.ids = len(dataset.ids)
    if dataset.has_masks:
        report.labels_from = f"masks ({dataset.mask_dir.name}/)"
    else:
        report.labels_from = f"{dataset.annotation_dir.name}/*.xml"
        labels = "" if dataset.annotation_dir.is_dir() else f" nor {dataset.annotation_dir.name}/: no labels at all"
        report.problems.append(f"{dataset.mask_dir}: no masks for split {split!r}{labels}; the eval_* stages "
                               "score against masks (and scribbles.source generate draws from them)")
    annotations = not dataset.has_masks and dataset.annotation_dir.is_dir()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda i: _check_image(dataset, i, annotations), dataset.ids))
    report.images = sum(image_ok for image_ok, _, _ in results)
    report.masks = sum(mask_ok for _, mask_ok, _ in results)
    problems = [p for _, _, found in results for p in found]
    report.problems += _capped(problems, limit, f"split {split!r}")
    return report, dataset


def check_scribbles(root: Path, dataset: VOCDataset | None, limit: int, workers: int) -> tuple[str, list[str]]:
    """What ``scribbles.source: auto`` would use for the train split, and the problems of the PNGs there."""
    directory = root / SCRIBBLE_DIR
    if not directory.is_dir():
        return f"none ({SCRIBBLE_DIR}/ absent): generated from the masks", []
    if dataset is None:
        return f"{SCRIBBLE_DIR}/ present (train split unreadable)", []

    def one(image_id: str) -> str | None:
        if not (directory / f"{image_id}.png").is_file():
            return f"{directory / image_id}.png: scribble not found for train image {image_id}"
        try:
            read_scribble(directory / f"{image_id}.png", image_size(dataset.image_path(image_id)),
                          dataset.num_classes)
        except DataError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = [p for p in pool.map(one, dataset.ids) if p]
    good = len(dataset.ids) - len(problems)
    return (f"{SCRIBBLE_DIR}/: {good} of {len(dataset.ids)} train images",
            _capped(problems, limit, f"{SCRIBBLE_DIR}/"))


def _capped(problems: list[str], limit: int, where: str) -> list[str]:
    if len(problems) <= limit:
        return problems
    return problems[:limit] + [f"... and {len(problems) - limit} more problems in {where}"]


def check_dataset(root: str | os.PathLike, splits: list[str], train_split: str, limit: int = 10,
                  workers: int | None = None) -> DataReport:
    """Check ``splits`` of the VOC-layout tree at ``root`` (and the scribbles of ``train_split``)."""
    root = Path(root)
    report = DataReport(str(root))
    if not root.is_dir():
        report.problems.append(f"{root}: dataset root not found (data.root)")
        return report
    workers = workers or os.cpu_count() or 1
    train = None
    for split in dict.fromkeys(splits):
        split_report, dataset = check_split(root, split, limit, workers)
        report.splits.append(split_report)
        report.problems += split_report.problems
        if dataset is not None:
            report.classes = dataset.class_names
            report.classes_from = "classes.txt" if (root / "classes.txt").is_file() else "VOC's 21 (no classes.txt)"
        if split == train_split:
            train = dataset
    report.scribbles, problems = check_scribbles(root, train, limit, workers)
    report.problems = list(dict.fromkeys(report.problems + problems))  # e.g. a bad classes.txt: once
    return report
