"""COCO 2014 for WSSS: the official instance annotations turned into the VOC layout the pipeline reads
(:mod:`pipeline.data.voc`).

Input, the official tree::

    <coco>/train2014/COCO_train2014_<12 digits>.jpg, <coco>/val2014/...
    <coco>/annotations/instances_train2014.json, instances_val2014.json

Output (``convert_coco(coco, out)``)::

    <out>/JPEGImages/<file stem>.jpg             symbolic links to the COCO images (copies with link=False)
    <out>/SegmentationClass/<file stem>.png      VOC-palette semantic masks: 0 = background, 1..80, 255 = ignore
    <out>/ImageSets/Segmentation/train2014.txt   the WSSS splits: images with at least one annotation
    <out>/ImageSets/Segmentation/val2014.txt     (82,081 of train2014, 40,137 of val2014 in the official files)
    <out>/classes.txt                            background + the 80 category names
    <out>/image_labels.json                      {split: {id: [1-based classes]}}: the classes in each mask
    <out>/coco.json                              provenance (sources, rules, counts); marks the tree as ours

Rules, written down because the instance annotations leave them open (REFERENCE.md, "COCO 2014"):

- **Class order**: category ids (1..90 with gaps) map to 1..80 in increasing id order, the order of the
  categories in the annotation file and of the WSSS COCO lists (person = 1, toothbrush = 80).
- **Overlaps**: instances are painted largest area first, so where two overlap the smaller one (usually
  the occluding or contained object) keeps its pixels; ties keep the annotation file's order.
- **Crowd regions** (``iscrowd: 1``, RLE): 255 (ignore) wherever no ordinary instance covers them: they hold
  several objects of the class with background between them, so neither label is right pixel by pixel.
- **Image labels**: the classes present in the written mask (as the VOC reader derives them), so an
  instance fully hidden under others, or a class that only appears as a crowd, is not a label.

Decoding uses pycocotools (polygons, uncompressed and compressed RLE). The JSON is read once; workers get
each image's annotations and write its mask, so the masks stream to disk.
"""
from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline.data.image_files import save_mask
from pipeline.engine.atomic import atomic_dir, write_json
from pipeline.errors import DataError

COCO_SPLITS = ("train2014", "val2014")
IGNORE = 255
MARKER = "coco.json"


def read_instances(path: str | os.PathLike) -> dict:
    """The instance-annotation JSON at ``path``, checked for the keys the conversion needs."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: COCO instance annotations not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: no {key!r} list; not a COCO instances file")
    return data


def category_map(categories: list[dict]) -> tuple[dict[int, int], list[str]]:
    """({COCO category id: 1-based class index in increasing id order}, class names with background first)."""
    ordered = sorted(categories, key=lambda c: int(c["id"]))
    if len({c["id"] for c in ordered}) != len(ordered):
        raise DataError("categories: a category id is listed twice")
    return ({int(c["id"]): i + 1 for i, c in enumerate(ordered)},
            ["background"] + [str(c["name"]).replace(" ", "_") for c in ordered])


def annotation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of one annotation's ``segmentation``: polygons, uncompressed or compressed RLE."""
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, list):  # polygons: one object may have several parts
        if not segmentation:
            return np.zeros((height, width), bool)
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
    else:
        raise DataError(f"segmentation of unknown form ({type(segmentation).__name__})")
    mask = coco_mask.decode(rle)
    if mask.shape[:2] != (height, width):
        raise DataError(f"segmentation size {mask.shape[1]}x{mask.shape[0]} differs from the image's {width}x{height}")
    return mask.astype(bool)


def semantic_mask(annotations: list[dict], height: int, width: int, classes: dict[int, int]) -> np.ndarray:
    """(H, W) uint8 class map of one image under the module's rules (largest first, crowd = 255)."""
    label = np.zeros((height, width), np.uint8)
    crowd = np.zeros((height, width), bool)
    covered = np.zeros((height, width), bool)
    ordinary = [a for a in annotations if not a.get("iscrowd")]
    for ann in sorted(ordinary, key=lambda a: -float(a.get("area", 0.0))):  # stable: ties keep file order
        mask = annotation_mask(ann["segmentation"], height, width)
        label[mask] = classes[int(ann["category_id"])]
        covered |= mask
    for ann in annotations:
        if ann.get("iscrowd"):
            crowd |= annotation_mask(ann["segmentation"], height, width)
    label[crowd & ~covered] = IGNORE
    return label


def _write_one(job: tuple) -> tuple[str, list[int]]:
    image_id, image_path, out, height, width, annotations, classes, link = job
    target = Path(out) / "JPEGImages" / f"{image_id}.jpg"
    if link:
        os.symlink(os.path.abspath(image_path), target)
    else:
        shutil.copyfile(image_path, target)
    try:
        mask = semantic_mask(annotations, height, width, classes)
    except DataError as exc:
        raise DataError(f"{image_path}: {exc}") from None
    save_mask(Path(out) / "SegmentationClass" / f"{image_id}.png", mask)
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    return image_id, [int(v) for v in present if 0 < v < IGNORE]


def _jobs(data: dict, image_dir: Path, out: Path, classes: dict[int, int], limit: int | None,
          link: bool) -> Iterable[tuple]:
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        if int(ann["category_id"]) not in classes:
            raise DataError(f"annotation {ann.get('id')}: category {ann['category_id']} is not in 'categories'")
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    images = sorted((im for im in data["images"] if int(im["id"]) in by_image), key=lambda im: im["file_name"])
    for image in images[:limit]:
        path = image_dir / image["file_name"]
        if not path.is_file():
            raise DataError(f"{path}: image listed in the annotations not found")
        yield (Path(image["file_name"]).stem, str(path), str(out), int(image["height"]), int(image["width"]),
               by_image[int(image["id"])], classes, link)


def convert_coco(coco_root: str | os.PathLike, out: str | os.PathLike, splits: tuple[str, ...] = COCO_SPLITS,
                 limit: int | None = None, workers: int | None = None, link: bool = True) -> dict[str, int]:
    """Write the VOC-layout tree of ``splits`` of the COCO tree at ``coco_root`` to ``out`` (replaced whole
    only when it is an earlier conversion: ``out/coco.json``); ``limit`` takes the first N images of each
    split by file name. Returns {split: images written}."""
    coco_root, out = Path(coco_root), Path(out)
    if out.exists() and not (out / MARKER).is_file():
        raise DataError(f"{out}: exists and is not a COCO conversion (no {MARKER}); choose an empty path")
    counts: dict[str, int] = {}
    names: list[str] | None = None
    labels: dict[str, dict[str, list[int]]] = {}
    with atomic_dir(out) as tmp:
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (tmp / sub).mkdir(parents=True)
        for split in splits:
            data = read_instances(coco_root / "annotations" / f"instances_{split}.json")
            classes, split_names = category_map(data["categories"])
            if names is not None and split_names != names:
                raise DataError(f"instances_{split}.json: categories differ from the other split's")
            names = split_names
            jobs = list(_jobs(data, coco_root / split, tmp, classes, limit, link))
            del data
            with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
                written = dict(pool.map(_write_one, jobs, chunksize=16))
            ids = [job[0] for job in jobs]
            (tmp / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
            labels[split] = {i: written[i] for i in ids}
            counts[split] = len(ids)
        (tmp / "classes.txt").write_text("".join(f"{n}\n" for n in names or []))
        write_json(tmp / "image_labels.json", labels)
        write_json(tmp / MARKER, {"source": str(coco_root.resolve()), "splits": counts, "limit": limit,
                                  "rules": "classes by category id; largest instance first; crowd-only pixels 255"})
    return counts
