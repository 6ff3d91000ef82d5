"""PASCAL VOC-layout segmentation datasets (VOC 2012, VOC + SBD ``train_aug``, MSRC, the synthetic demo).

Layout under ``root``::

    JPEGImages/<id>.jpg
    SegmentationClassAug/<id>.png     used when the directory exists, else SegmentationClass/<id>.png
    ImageSets/Segmentation/<split>.txt
    classes.txt                       optional: one name per line, background first (default VOC_CLASSES)
    Annotations/<id>.xml              optional: image-level labels for splits without masks

Masks hold class indices 0..C-1 (0 = background) and 255 = void. Image-level labels are multi-hot over the
C-1 foreground classes; they come from the mask, or from the XML annotations when the split has no masks,
or from a precomputed ``{id: [1-based class indices]}`` mapping.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from pipeline.data.image_files import image_to_rgb, load_image, load_mask
from pipeline.errors import DataError

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
IGNORE_INDEX = 255


def check_id(image_id: str, where: str) -> str:
    """``image_id`` if it is a plain file name stem (it names files under JPEGImages/ and every stage's
    outputs): not empty, no path separator, not ``.``/``..``, no whitespace or control character; else a
    DataError naming ``where`` (the split file and line)."""
    bad = next((c for c in image_id if c in "/\\" or c.isspace() or not c.isprintable()), None)
    if not image_id or image_id in (".", "..") or bad is not None:
        reason = "a path separator" if bad in ("/", "\\") else "a space or control character" if bad else "not a name"
        raise DataError(f"{where}: id {image_id!r} is not a plain file name ({reason})")
    return image_id


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Ids of a split file, one per non-blank line (surrounding blanks ignored), in file order, no duplicates;
    each must be a plain name (:func:`check_id`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    ids = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        image_id = check_id(line.strip(), f"{path}:{number}")
        if image_id in seen:
            raise DataError(f"{path}: id {image_id} is listed twice")
        seen.add(image_id)
        ids.append(image_id)
    if not ids:
        raise DataError(f"{path}: split file lists no ids")
    return ids


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from ``classes.txt`` (background first)."""
    path = Path(path)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) < 2:
        raise DataError(f"{path}: needs background and at least one object class, got {len(names)} names")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: class names must be unique")
    if len(names) > IGNORE_INDEX:
        raise DataError(f"{path}: at most {IGNORE_INDEX} classes fit an 8-bit mask, got {len(names)}")
    return names


def image_size(path: Path, decode: bool = False) -> tuple[int, int]:
    """(height, width) from the file header; ``decode`` also decodes the pixels, so that a truncated or
    corrupt body fails here and not in the middle of a training epoch."""
    if not path.is_file():
        raise DataError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if decode:
                image.load()
                image_to_rgb(image, path)  # a mode we cannot read right fails here, naming the file
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports some corrupt headers as SyntaxError
        raise DataError(f"{path}: unreadable image ({exc})") from None
    return height, width


class VOCDataset:
    """One split of a VOC-layout dataset. ``labels`` optionally maps id -> 1-based foreground indices."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        labels: Mapping[str, Sequence[int]] | None = None,
    ):
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset root not found")
        self.ids: list[str] = read_id_list(self.root / "ImageSets" / "Segmentation" / f"{split}.txt")
        classes_file = self.root / "classes.txt"
        self.class_names: list[str] = (
            read_class_names(classes_file) if classes_file.is_file() else list(VOC_CLASSES)
        )
        self.num_classes = len(self.class_names)
        aug = self.root / "SegmentationClassAug"
        self.mask_dir = aug if aug.is_dir() else self.root / "SegmentationClass"
        self.image_dir = self.root / "JPEGImages"
        self.annotation_dir = self.root / "Annotations"
        self._labels = None if labels is None else self._check_label_dict(labels)

    # ---------------------------------------------------------------- paths
    def image_path(self, image_id: str) -> Path:
        return self.image_dir / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path | None:
        """Where the id's mask lives, or None when this split has no masks."""
        return self.mask_dir / f"{image_id}.png" if self.has_masks else None

    @cached_property
    def has_masks(self) -> bool:
        """True when the split's masks exist (any of them: a partial set is an error at load time)."""
        return self.mask_dir.is_dir() and any((self.mask_dir / f"{i}.png").is_file() for i in self.ids)

    # ---------------------------------------------------------------- loading
    def load_image(self, image_id: str) -> np.ndarray:
        return load_image(self.image_path(image_id))

    def load_mask(self, image_id: str) -> np.ndarray:
        """(H, W) uint8 class indices, 255 = void; checked against the image size and the class count."""
        path = self.mask_path(image_id)
        if path is None:
            raise DataError(f"{self.mask_dir}: split {self.split} has no masks (needed for {image_id})")
        mask = self._read_mask(path)
        expected = image_size(self.image_path(image_id))
        if mask.shape != expected:
            raise DataError(
                f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from the image's "
                f"{expected[1]}x{expected[0]}"
            )
        return mask

    def _read_mask(self, path: Path) -> np.ndarray:
        mask = load_mask(path)
        bad = (mask >= self.num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            value = int(mask[bad][0])
            raise DataError(
                f"{path}: mask value {value} is neither a class index 0..{self.num_classes - 1} nor 255"
            )
        return mask

    def labels(self, image_id: str) -> np.ndarray:
        """Multi-hot float32 (num_classes - 1,) over the foreground classes."""
        return self._multi_hot(self.label_indices(image_id))

    def label_indices(self, image_id: str) -> list[int]:
        """Sorted 1-based indices of the foreground classes present in the image."""
        if self._labels is not None:
            if image_id not in self._labels:
                raise DataError(f"labels: no entry for image {image_id} of {self.root} split {self.split}")
            return self._labels[image_id]
        if self.has_masks:
            path = self.mask_path(image_id)
            return mask_label_indices(self._read_mask(path))
        return self._annotation_labels(image_id)

    def _annotation_labels(self, image_id: str) -> list[int]:
        path = self.annotation_dir / f"{image_id}.xml"
        if not path.is_file():
            raise DataError(f"{path}: no mask and no annotation for image {image_id}")
        try:
            tree = ET.parse(path)
        except ET.ParseError as exc:
            raise DataError(f"{path}: unreadable annotation ({exc})") from None
        index = {name: i for i, name in enumerate(self.class_names)}
        found = set()
        for node in tree.getroot().iter("object"):
            name = (node.findtext("name") or "").strip()
            if name not in index or index[name] == 0:
                raise DataError(f"{path}: unknown object class {name!r}")
            found.add(index[name])
        return sorted(found)

    def _multi_hot(self, indices: Sequence[int]) -> np.ndarray:
        vector = np.zeros(self.num_classes - 1, dtype=np.float32)
        vector[np.asarray(indices, dtype=np.int64) - 1] = 1.0
        return vector

    def _check_label_dict(self, labels: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
        checked = {}
        for image_id, indices in labels.items():
            indices = sorted({int(i) for i in indices})
            if indices and (indices[0] < 1 or indices[-1] >= self.num_classes):
                raise DataError(
                    f"labels: image {image_id} has class index outside 1..{self.num_classes - 1}: {indices}"
                )
            checked[image_id] = indices
        return checked

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        mask = self.load_mask(image_id) if self.has_masks else None
        if mask is not None and self._labels is None:
            labels = self._multi_hot(mask_label_indices(mask))
        else:
            labels = self.labels(image_id)
        return {"id": image_id, "image": self.load_image(image_id), "mask": mask, "labels": labels}

    # ---------------------------------------------------------------- checks
    def validate(self, check_pixels: bool = False, workers: int | None = None, decode_images: bool = False) -> None:
        """Check every id's image exists and is readable (header; every pixel with ``decode_images``) and
        its mask exists with the same size (for a split without masks: that its labels have a source).

        ``check_pixels`` also decodes every mask and checks its values. Raises DataError naming the file.
        Runs on a thread pool (PIL releases the GIL while decoding).
        """
        def check(image_id: str) -> None:
            size = image_size(self.image_path(image_id), decode=decode_images)
            if not self.has_masks:
                annotation = self.annotation_dir / f"{image_id}.xml"
                if self._labels is None and not annotation.is_file():
                    raise DataError(f"{annotation}: no mask and no annotation for image {image_id}")
                return
            path = self.mask_path(image_id)
            if check_pixels:
                mask_size = self._read_mask(path).shape
            else:
                if not path.is_file():
                    raise DataError(f"{path}: mask not found")
                mask_size = image_size(path)
            if mask_size != size:
                raise DataError(
                    f"{path}: mask size {mask_size[1]}x{mask_size[0]} differs from the image's {size[1]}x{size[0]}"
                )

        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for _ in pool.map(check, self.ids):
                pass


def mask_label_indices(mask: np.ndarray) -> list[int]:
    """Sorted foreground classes present in a mask (ignoring 0 = background and 255 = void)."""
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    return [int(v) for v in present if 0 < v < IGNORE_INDEX]


def compute_labels(dataset: VOCDataset, workers: int | None = None) -> dict[str, list[int]]:
    """Image-level labels of every id of ``dataset`` as {id: [1-based class indices]}, in split order.

    Mask decoding (PIL releases the GIL while decoding) runs on a thread pool over all cores.
    """
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(pool.map(dataset.label_indices, dataset.ids))
    return dict(zip(dataset.ids, results))
