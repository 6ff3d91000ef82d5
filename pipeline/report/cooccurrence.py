"""Which labelled classes appear together: a diagnostic to read before training anything.

Image-level labels cannot tell apart two classes that always appear together (MSRC train: every image with
a face also has a body): a multi-label classifier may light up either for both, and its CAMs then spread
over the pair. From the image labels of a split this counts, per class, the images that contain it, the
images where it is the only labelled class ("alone") and, per pair of classes, the images that contain
both. A class that never appears alone is flagged. Per-class IoU (e.g. ``eval_cam``'s ``per_class.csv``)
can be put beside the counts, so a failing class can be matched with its co-occurrence.

Used by the ``data`` stage (``cooccurrence.csv``, ``cooccurrence_pairs.csv``: the DVC heatmap), the
inspect report and :func:`cooccurrence_table` (rows for a text summary).
"""
from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DataError


@dataclass
class Cooccurrence:
    """Counts over the images of one split. ``classes``: the foreground class names (index k is label
    k + 1); ``images[k]``: images with class k; ``alone[k]``: images whose only label is class k;
    ``together[j, k]``: images with both classes j and k (the diagonal is ``images``)."""

    classes: list[str]
    images: np.ndarray
    alone: np.ndarray
    together: np.ndarray
    num_images: int

    @property
    def never_alone(self) -> np.ndarray:
        """Classes present in some image but never the only label of one."""
        return (self.images > 0) & (self.alone == 0)


def count_cooccurrence(labels: Mapping[str, Sequence[int]], class_names: Sequence[str]) -> Cooccurrence:
    """Counts from the image labels (``labels[id]``: the image's 1-based foreground class indices, as in
    the data stage's ``index.json``; ``class_names`` with background first)."""
    num_fg = len(class_names) - 1
    if num_fg < 1:
        raise DataError("cooccurrence: the class list holds no foreground class")
    hot = np.zeros((len(labels), num_fg), dtype=np.int64)
    for row, (image_id, classes) in enumerate(labels.items()):
        for c in set(int(c) for c in classes):
            if not 1 <= c <= num_fg:
                raise DataError(f"cooccurrence: image {image_id} has label {c}, outside 1..{num_fg}")
            hot[row, c - 1] = 1
    single = hot.sum(1) == 1
    return Cooccurrence(classes=list(class_names[1:]), images=hot.sum(0), alone=hot[single].sum(0),
                        together=hot.T @ hot, num_images=len(labels))


def cooccurrence_rows(co: Cooccurrence, iou: Mapping[str, float | None] | None = None) -> list[dict]:
    """One row per foreground class: ``class``, ``images``, ``alone``, ``never_alone`` (flag),
    ``partner`` (the class it appears with most often, "" if none), ``with_partner`` (images with both),
    ``partner_share`` (with_partner / images) and ``iou`` (from ``iou`` by class name, None if absent)."""
    rows = []
    for k, name in enumerate(co.classes):
        others = co.together[k].copy()
        others[k] = 0
        partner = int(others.argmax())
        has_partner = bool(others[partner] > 0)
        rows.append({
            "class": name,
            "images": int(co.images[k]),
            "alone": int(co.alone[k]),
            "never_alone": bool(co.never_alone[k]),
            "partner": co.classes[partner] if has_partner else "",
            "with_partner": int(others[partner]),
            "partner_share": round(float(others[partner] / co.images[k]), 4) if co.images[k] else None,
            "iou": None if iou is None else iou.get(name),
        })
    return rows


def cooccurrence_table(labels: Mapping[str, Sequence[int]], class_names: Sequence[str],
                       per_class_csv: str | Path | None = None) -> list[dict]:
    """Rows (:func:`cooccurrence_rows`) for a text summary, with the per-class IoU of ``per_class_csv``
    (an ``eval_*`` stage's ``class,iou`` file) when that file exists."""
    iou = read_per_class_iou(per_class_csv) if per_class_csv is not None else None
    return cooccurrence_rows(count_cooccurrence(labels, class_names), iou)


def read_per_class_iou(path: str | Path) -> dict[str, float | None] | None:
    """``{class: iou}`` from a ``class,iou`` CSV (empty cells: None); None when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"class", "iou"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected the columns class,iou")
        return {row["class"]: (float(row["iou"]) if row["iou"] not in ("", None) else None) for row in reader}


ROW_COLUMNS = ("class", "images", "alone", "never_alone", "partner", "with_partner", "partner_share")


def write_cooccurrence(directory: Path, labels: Mapping[str, Sequence[int]],
                       class_names: Sequence[str]) -> Cooccurrence:
    """Write ``cooccurrence.csv`` (one row per class, :data:`ROW_COLUMNS`) and ``cooccurrence_pairs.csv``
    into ``directory``: one ``class,with`` row per image and ordered pair of its labelled classes, and a
    ``class,class`` row per image where the class is alone, so that DVC's ``confusion`` template, which
    counts rows, draws the pair counts with the "alone" counts on the diagonal."""
    co = count_cooccurrence(labels, class_names)
    with open(directory / "cooccurrence.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ROW_COLUMNS))
        writer.writeheader()
        for row in cooccurrence_rows(co):
            writer.writerow({k: ("" if row[k] is None else row[k]) for k in ROW_COLUMNS})
    names = co.classes
    with open(directory / "cooccurrence_pairs.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "with"])
        for classes in labels.values():
            present = sorted({int(c) - 1 for c in classes})
            if len(present) == 1:
                writer.writerow([names[present[0]], names[present[0]]])
            writer.writerows([names[a], names[b]] for a in present for b in present if a != b)
    return co
