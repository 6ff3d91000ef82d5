"""VOC + SBD: train_aug derivation against the real VOC 2012 lists, and SBD .mat -> PNG conversion."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from pipeline.data.image_files import load_mask, save_mask
from pipeline.data.sbd import build_segmentation_class_aug, derive_train_aug, load_sbd_mask, write_train_aug
from pipeline.data.voc import VOCDataset
from pipeline.engine.atomic import OWNER_MARKER
from pipeline.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "data" / "voc12_masks"


def write_list(path: Path, ids) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def read_list(path: Path) -> list[str]:
    return path.read_text().split()


def write_sbd_mat(path: Path, segmentation: np.ndarray) -> None:
    """An SBD-style cls .mat: struct GTcls with Boundaries, Segmentation, CategoriesPresent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    present = np.array([v for v in np.unique(segmentation) if 0 < v < 255], dtype=np.uint8)
    scipy.io.savemat(path, {"GTcls": {"Boundaries": np.zeros((1, 20), dtype=object),
                                      "Segmentation": segmentation.astype(np.uint8),
                                      "CategoriesPresent": present}}, do_compression=True)


def test_derive_train_aug_reproduces_the_real_list(tmp_path, shared_data):
    lists = shared_data / "voc12_lists"
    voc_train, voc_val, expected = (read_list(lists / f"{n}.txt") for n in ("train", "val", "train_aug"))
    assert len(expected) == 10582
    voc = tmp_path / "VOC2012"
    write_list(voc / "ImageSets" / "Segmentation" / "train.txt", voc_train)
    write_list(voc / "ImageSets" / "Segmentation" / "val.txt", voc_val)
    # SBD = train_aug minus VOC train, split arbitrarily, plus VOC val ids (to be removed) and some VOC train
    # ids (SBD and VOC train overlap in reality too).
    sbd_only = sorted(set(expected) - set(voc_train))
    sbd_train = sbd_only[::2] + voc_val[:300] + voc_train[:100]
    sbd_val = sbd_only[1::2] + voc_val[300:700]
    sbd = tmp_path / "benchmark_RELEASE"
    write_list(sbd / "dataset" / "train.txt", sbd_train[::-1])
    write_list(sbd / "dataset" / "val.txt", sbd_val)

    derived = derive_train_aug(voc, sbd)
    assert derived == expected
    path = write_train_aug(voc, sbd)
    assert path == voc / "ImageSets" / "Segmentation" / "train_aug.txt"
    assert path.read_text() == (lists / "train_aug.txt").read_text()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_derive_train_aug_errors(tmp_path):
    with pytest.raises(DataError, match="VOC root not found"):
        derive_train_aug(tmp_path / "voc", tmp_path / "sbd")
    (tmp_path / "voc").mkdir()
    with pytest.raises(DataError, match=r"sbd/dataset: SBD dataset directory not found"):
        derive_train_aug(tmp_path / "voc", tmp_path / "sbd")
    (tmp_path / "sbd" / "dataset").mkdir(parents=True)
    with pytest.raises(DataError, match=r"dataset/train\.txt: split file not found"):
        derive_train_aug(tmp_path / "voc", tmp_path / "sbd")


def test_load_sbd_mask_round_trip(tmp_path):
    segmentation = np.zeros((7, 9), np.uint8)
    segmentation[2:5, 3:8] = 15
    segmentation[0, 0] = 20
    write_sbd_mat(tmp_path / "a.mat", segmentation)
    mask = load_sbd_mask(tmp_path / "a.mat")
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, segmentation)

    scipy.io.savemat(tmp_path / "b.mat", {"GTinst": {"Segmentation": segmentation}})
    with pytest.raises(DataError, match=r"b\.mat: not an SBD GTcls \.mat file"):
        load_sbd_mask(tmp_path / "b.mat")
    write_sbd_mat(tmp_path / "c.mat", np.full((3, 3), 21, np.uint8))
    with pytest.raises(DataError, match=r"c\.mat: GTcls\.Segmentation holds values outside 0\.\.20 and 255"):
        load_sbd_mask(tmp_path / "c.mat")
    (tmp_path / "d.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"d\.mat: not an SBD GTcls \.mat file"):
        load_sbd_mask(tmp_path / "d.mat")
    with pytest.raises(DataError, match=r"e\.mat: SBD class mask not found"):
        load_sbd_mask(tmp_path / "e.mat")


@pytest.fixture
def voc_sbd(tmp_path):
    """VOC train 2007_000032 and val 2007_000033 with official masks (255 borders); SBD has 2008_000002
    (train), 2008_000003 (val) and also the VOC val image 2007_000033 with a different, border-free mask."""
    voc, sbd = tmp_path / "VOC2012", tmp_path / "SBD"
    for image_id in ("2007_000032", "2007_000033"):
        (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / f"{image_id}.png", voc / "SegmentationClass" / f"{image_id}.png")
    write_list(voc / "ImageSets" / "Segmentation" / "train.txt", ["2007_000032"])
    write_list(voc / "ImageSets" / "Segmentation" / "val.txt", ["2007_000033"])
    write_list(sbd / "dataset" / "train.txt", ["2008_000002", "2007_000033"])
    write_list(sbd / "dataset" / "val.txt", ["2008_000003"])
    for index, image_id in enumerate(("2008_000002", "2008_000003"), start=3):
        segmentation = np.zeros((20, 30), np.uint8)
        segmentation[5:15, index:index + 10] = index
        write_sbd_mat(sbd / "dataset" / "cls" / f"{image_id}.mat", segmentation)
    write_sbd_mat(sbd / "dataset" / "cls" / "2007_000033.mat", np.full((366, 500), 7, np.uint8))
    return voc, sbd


@pytest.mark.parametrize("workers", [1, 2])
def test_build_segmentation_class_aug(voc_sbd, workers):
    voc, sbd = voc_sbd
    counts = build_segmentation_class_aug(voc, sbd, workers=workers)
    assert counts == {"voc": 2, "sbd": 2}
    out = voc / "SegmentationClassAug"
    assert sorted(p.name for p in out.iterdir() if p.name != OWNER_MARKER) == [
        "2007_000032.png", "2007_000033.png", "2008_000002.png", "2008_000003.png"]
    # The official VOC masks win, byte for byte, with their void borders.
    for image_id in ("2007_000032", "2007_000033"):
        assert (out / f"{image_id}.png").read_bytes() == (FIXTURES / f"{image_id}.png").read_bytes()
    assert (load_mask(out / "2007_000033.png") == 255).any()
    converted = load_mask(out / "2008_000003.png")
    assert converted.shape == (20, 30) and set(np.unique(converted)) == {0, 4}
    assert converted[5:15, 4:14].min() == 4

    write_train_aug(voc, sbd)
    assert read_list(voc / "ImageSets" / "Segmentation" / "train_aug.txt") == [
        "2007_000032", "2008_000002", "2008_000003"]
    # The reader then takes SegmentationClassAug and derives labels from the converted masks.
    for image_id, (h, w) in {"2007_000032": (281, 500), "2008_000002": (20, 30), "2008_000003": (20, 30)}.items():
        (voc / "JPEGImages").mkdir(exist_ok=True)
        Image.new("RGB", (w, h)).save(voc / "JPEGImages" / f"{image_id}.jpg")
    dataset = VOCDataset(voc, "train_aug")
    dataset.validate(check_pixels=True)
    assert [np.flatnonzero(dataset.labels(i)).tolist() for i in dataset.ids] == [[0, 14], [2], [3]]


def test_build_segmentation_class_aug_missing_mat(voc_sbd):
    voc, sbd = voc_sbd
    (sbd / "dataset" / "cls" / "2008_000003.mat").unlink()
    save_mask(voc / "SegmentationClassAug" / "old.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match=r"cls/2008_000003\.mat: SBD class mask not found"):
        build_segmentation_class_aug(voc, sbd, workers=1)
    # The failed build left the previous output alone and no temporary directory behind.
    assert [p.name for p in (voc / "SegmentationClassAug").iterdir()] == ["old.png"]
    assert not [p for p in voc.iterdir() if p.name.startswith(".")]
