"""VOC 2012 + SBD (Hariharan et al., ICCV 2011): the ``train_aug`` split and ``SegmentationClassAug`` masks.

``train_aug`` = (SBD train + SBD val + VOC train) minus VOC val, the standard 10,582-image WSSS training
set. SBD stores class masks as MATLAB structs ``dataset/cls/<id>.mat`` (``GTcls.Segmentation``, uint8
H x W, class indices 0..20); they are written as VOC-palette PNGs next to the official VOC masks, which take
precedence for the ids that have them (their 255 borders are kept).

SBD layout: ``sbd_root/dataset/{train.txt, val.txt, cls/<id>.mat, img/<id>.jpg}``.
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.data.image_files import save_mask
from pipeline.data.voc import IGNORE_INDEX, VOC_CLASSES, read_id_list
from pipeline.engine.atomic import atomic_dir, atomic_path
from pipeline.errors import DataError


def _voc_split(voc_root: Path, split: str) -> list[str]:
    return read_id_list(voc_root / "ImageSets" / "Segmentation" / f"{split}.txt")


def _sbd_split(sbd_root: Path, split: str) -> list[str]:
    return read_id_list(sbd_root / "dataset" / f"{split}.txt")


def _check_roots(voc_root: Path, sbd_root: Path) -> None:
    if not voc_root.is_dir():
        raise DataError(f"{voc_root}: VOC root not found")
    if not (sbd_root / "dataset").is_dir():
        raise DataError(f"{sbd_root / 'dataset'}: SBD dataset directory not found")


def derive_train_aug(voc_root: str | os.PathLike, sbd_root: str | os.PathLike) -> list[str]:
    """Sorted ids of (SBD train + SBD val + VOC train) minus VOC val."""
    voc_root, sbd_root = Path(voc_root), Path(sbd_root)
    _check_roots(voc_root, sbd_root)
    pool = set(_sbd_split(sbd_root, "train")) | set(_sbd_split(sbd_root, "val")) | set(_voc_split(voc_root, "train"))
    return sorted(pool - set(_voc_split(voc_root, "val")))


def write_train_aug(voc_root: str | os.PathLike, sbd_root: str | os.PathLike) -> Path:
    """Write ``ImageSets/Segmentation/train_aug.txt`` under ``voc_root`` atomically; return its path."""
    ids = derive_train_aug(voc_root, sbd_root)
    path = Path(voc_root) / "ImageSets" / "Segmentation" / "train_aug.txt"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(ids) + "\n")
    return path


def load_sbd_mask(path: str | os.PathLike, num_classes: int = len(VOC_CLASSES)) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/<id>.mat`` as an (H, W) uint8 array of class indices."""
    import scipy.io  # only SBD's .mat files need it: pipeline.data stays quick to import

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: SBD class mask not found")
    try:
        content = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
        mask = np.asarray(content["GTcls"].Segmentation)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, NotImplementedError,
            scipy.io.matlab.MatReadError) as exc:
        raise DataError(f"{path}: not an SBD GTcls .mat file ({type(exc).__name__}: {exc})") from None
    if mask.ndim != 2:
        raise DataError(f"{path}: GTcls.Segmentation must be 2-D, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or ((mask >= num_classes) & (mask != IGNORE_INDEX)).any()):
        raise DataError(f"{path}: GTcls.Segmentation holds values outside 0..{num_classes - 1} and 255")
    return mask.astype(np.uint8)


def _convert_one(task: tuple[str, str, str]) -> str:
    """Copy the official VOC mask when there is one, else convert the SBD .mat; return which was used."""
    voc_mask, sbd_mat, out_png = task
    if os.path.isfile(voc_mask):
        shutil.copyfile(voc_mask, out_png)
        return "voc"
    save_mask(out_png, load_sbd_mask(sbd_mat))
    return "sbd"


def build_segmentation_class_aug(
    voc_root: str | os.PathLike,
    sbd_root: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> dict[str, int]:
    """Write one PNG mask per id of train_aug, VOC train and VOC val into ``out_dir``.

    ``out_dir`` defaults to ``voc_root/SegmentationClassAug`` and is replaced whole and atomically.
    Returns how many masks came from each source: ``{"voc": n, "sbd": m}``.
    """
    voc_root, sbd_root = Path(voc_root), Path(sbd_root)
    out_dir = Path(out_dir) if out_dir is not None else voc_root / "SegmentationClassAug"
    ids = sorted(set(derive_train_aug(voc_root, sbd_root)) | set(_voc_split(voc_root, "train"))
                 | set(_voc_split(voc_root, "val")))
    counts = {"voc": 0, "sbd": 0}
    with atomic_dir(out_dir) as tmp:
        tasks = [
            (str(voc_root / "SegmentationClass" / f"{i}.png"), str(sbd_root / "dataset" / "cls" / f"{i}.mat"),
             str(Path(tmp) / f"{i}.png"))
            for i in ids
        ]
        workers = workers or os.cpu_count() or 1
        if workers == 1:
            sources = [_convert_one(task) for task in tasks]
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                sources = list(pool.map(_convert_one, tasks, chunksize=64))
        for source in sources:
            counts[source] += 1
    return counts
