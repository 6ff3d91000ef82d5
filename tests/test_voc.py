"""VOCDataset on real VOC 2012 masks (fixtures), on MSRC in VOC layout, and on every kind of broken tree."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.image_files import load_mask, save_mask
from pipeline.data.voc import VOC_CLASSES, VOCDataset, compute_labels, mask_label_indices
from pipeline.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "data" / "voc12_masks"
# Real VOC 2012 masks and the classes they show (1 aeroplane, 2 bicycle, 6 bus, 7 car, 15 person).
KNOWN = {"2007_000032": [1, 15], "2007_000033": [1], "2007_000129": [2, 15], "2007_000648": [1, 6, 7, 15]}


def write_jpeg(path: Path, height: int, width: int, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path, quality=95)


def write_split(root: Path, split: str, ids) -> None:
    path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


@pytest.fixture
def voc_root(tmp_path) -> Path:
    """VOC tree with the real masks of the fixtures and grey JPEGs of the same sizes."""
    root = tmp_path / "VOC2012"
    (root / "SegmentationClass").mkdir(parents=True)
    for image_id in KNOWN:
        shutil.copy(FIXTURES / f"{image_id}.png", root / "SegmentationClass" / f"{image_id}.png")
        height, width = load_mask(FIXTURES / f"{image_id}.png").shape
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", height, width)
    write_split(root, "train", ["2007_000032", "2007_000648"])
    write_split(root, "val", ["2007_000033", "2007_000129"])
    return root


def test_real_voc_masks_give_labels_and_keep_void(voc_root):
    dataset = VOCDataset(voc_root, "train")
    assert dataset.class_names == list(VOC_CLASSES) and dataset.num_classes == 21
    assert dataset.ids == ["2007_000032", "2007_000648"] and len(dataset) == 2
    assert dataset.has_masks
    dataset.validate(check_pixels=True)
    for image_id in dataset.ids:
        labels = dataset.labels(image_id)
        assert labels.dtype == np.float32 and labels.shape == (20,)
        assert (np.flatnonzero(labels) + 1).tolist() == KNOWN[image_id]
        mask = dataset.load_mask(image_id)
        assert mask.dtype == np.uint8 and mask.shape == dataset.load_image(image_id).shape[:2]
        assert (mask == 255).any()  # the official 5-pixel void borders survive reading
        np.testing.assert_array_equal(mask, np.array(Image.open(FIXTURES / f"{image_id}.png")))
    item = dataset[1]
    assert item["id"] == "2007_000648" and item["image"].shape == (333, 500, 3) and item["image"].dtype == np.uint8
    assert item["mask"].shape == (333, 500)
    assert (np.flatnonzero(item["labels"]) + 1).tolist() == [1, 6, 7, 15]


def test_compute_labels_matches_masks(voc_root):
    val = VOCDataset(voc_root, "val")
    assert compute_labels(val, workers=2) == {i: KNOWN[i] for i in val.ids}
    assert list(compute_labels(val)) == val.ids


def test_mask_label_indices_ignores_background_and_void():
    mask = np.array([[0, 255, 3], [3, 7, 255]], np.uint8)
    assert mask_label_indices(mask) == [3, 7]
    assert mask_label_indices(np.full((2, 2), 255, np.uint8)) == []


def test_segmentation_class_aug_takes_precedence(voc_root):
    aug = voc_root / "SegmentationClassAug"
    aug.mkdir()
    for image_id in KNOWN:
        shape = load_mask(voc_root / "SegmentationClass" / f"{image_id}.png").shape
        save_mask(aug / f"{image_id}.png", np.full(shape, 5, np.uint8))
    dataset = VOCDataset(voc_root, "train")
    assert dataset.mask_path("2007_000032") == aug / "2007_000032.png"
    assert dataset.labels("2007_000032").nonzero()[0].tolist() == [4]


def test_labels_from_annotations_when_split_has_no_masks(voc_root):
    write_jpeg(voc_root / "JPEGImages" / "2008_000001.jpg", 40, 60)
    write_split(voc_root, "test", ["2008_000001"])
    (voc_root / "Annotations").mkdir()
    (voc_root / "Annotations" / "2008_000001.xml").write_text(
        "<annotation><filename>2008_000001.jpg</filename>"
        "<object><name>dog</name></object><object><name>person</name></object>"
        "<object><name>dog</name></object></annotation>"
    )
    dataset = VOCDataset(voc_root, "test")
    assert not dataset.has_masks and dataset.mask_path("2008_000001") is None
    dataset.validate()
    assert (np.flatnonzero(dataset.labels("2008_000001")) + 1).tolist() == [12, 15]
    item = dataset[0]
    assert item["mask"] is None and item["image"].shape == (40, 60, 3)

    (voc_root / "Annotations" / "2008_000001.xml").write_text(
        "<annotation><object><name>unicorn</name></object></annotation>")
    with pytest.raises(DataError, match=r"2008_000001\.xml: unknown object class 'unicorn'"):
        VOCDataset(voc_root, "test").labels("2008_000001")
    (voc_root / "Annotations" / "2008_000001.xml").unlink()
    with pytest.raises(DataError, match=r"2008_000001\.xml: no mask and no annotation"):
        VOCDataset(voc_root, "test").labels("2008_000001")
    with pytest.raises(DataError, match=r"2008_000001\.xml: no mask and no annotation"):
        VOCDataset(voc_root, "test").validate()
    VOCDataset(voc_root, "test", labels={"2008_000001": [3]}).validate()


def test_precomputed_labels_are_used(voc_root):
    dataset = VOCDataset(voc_root, "train", labels={"2007_000032": [3], "2007_000648": []})
    assert dataset.labels("2007_000032").nonzero()[0].tolist() == [2]
    assert not dataset[1]["labels"].any()
    with pytest.raises(DataError, match="labels: image x has class index outside 1..20"):
        VOCDataset(voc_root, "train", labels={"x": [21]})
    with pytest.raises(DataError, match="labels: no entry for image 2007_000648"):
        VOCDataset(voc_root, "train", labels={"2007_000032": [1]}).labels("2007_000648")


def test_msrc_reads_through_the_same_reader(shared_data):
    root = shared_data / "msrc_objects"
    train = VOCDataset(root, "train")
    assert train.num_classes == 16 and train.class_names[0] == "background" and train.class_names[1] == "cow"
    assert len(train) == 351 and len(VOCDataset(root, "val")) == 90
    train.validate()
    labels = compute_labels(train)
    assert len(labels) == 351
    assert sum(not v for v in labels.values()) == 59  # real negatives, documented in the data README
    assert {c for v in labels.values() for c in v} == set(range(1, 16))
    empty_id = next(i for i, v in labels.items() if not v)
    assert train.labels(empty_id).shape == (15,) and not train.labels(empty_id).any()


# ------------------------------------------------------------------ errors
def test_missing_root_and_split(tmp_path, voc_root):
    with pytest.raises(DataError, match=r"no_such: dataset root not found"):
        VOCDataset(tmp_path / "no_such", "train")
    with pytest.raises(DataError, match=r"Segmentation/trainval\.txt: split file not found"):
        VOCDataset(voc_root, "trainval")
    write_split(voc_root, "empty", [])
    with pytest.raises(DataError, match=r"empty\.txt: split file lists no ids"):
        VOCDataset(voc_root, "empty")
    write_split(voc_root, "twice", ["2007_000032", "2007_000032"])
    with pytest.raises(DataError, match=r"twice\.txt: id 2007_000032 is listed twice"):
        VOCDataset(voc_root, "twice")


def test_missing_image_and_mask(voc_root):
    (voc_root / "JPEGImages" / "2007_000648.jpg").unlink()
    dataset = VOCDataset(voc_root, "train")
    with pytest.raises(DataError, match=r"2007_000648\.jpg: image not found"):
        dataset.validate()
    with pytest.raises(DataError, match=r"2007_000648\.jpg: image not found"):
        dataset.load_image("2007_000648")

    (voc_root / "SegmentationClass" / "2007_000033.png").unlink()
    val = VOCDataset(voc_root, "val")
    assert val.has_masks  # one of the split's masks is there: the other one is missing
    with pytest.raises(DataError, match=r"2007_000033\.png: mask not found"):
        val.validate()
    with pytest.raises(DataError, match=r"2007_000033\.png: mask not found"):
        val.load_mask("2007_000033")


def test_unreadable_image(voc_root):
    (voc_root / "JPEGImages" / "2007_000032.jpg").write_bytes(b"not a jpeg at all")
    dataset = VOCDataset(voc_root, "train")
    with pytest.raises(DataError, match=r"2007_000032\.jpg: unreadable image"):
        dataset.validate()
    with pytest.raises(DataError, match=r"2007_000032\.jpg: unreadable image"):
        dataset.load_image("2007_000032")


def test_truncated_jpeg_body_fails_in_validation_when_decoding(voc_root):
    path = voc_root / "JPEGImages" / "2007_000032.jpg"
    rng = np.random.default_rng(0)
    height, width = load_mask(voc_root / "SegmentationClass" / "2007_000032.png").shape
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # header intact, body cut
    dataset = VOCDataset(voc_root, "train")
    dataset.validate()  # header only: passes
    with pytest.raises(DataError, match=r"2007_000032\.jpg: unreadable image"):
        dataset.validate(decode_images=True)


def test_mask_size_differs_from_image(voc_root):
    write_jpeg(voc_root / "JPEGImages" / "2007_000032.jpg", 280, 500)
    dataset = VOCDataset(voc_root, "train")
    message = r"2007_000032\.png: mask size 500x281 differs from the image's 500x280"
    with pytest.raises(DataError, match=message):
        dataset.validate()
    with pytest.raises(DataError, match=message):
        dataset.load_mask("2007_000032")


def test_mask_value_out_of_range(voc_root):
    mask = load_mask(voc_root / "SegmentationClass" / "2007_000032.png")
    mask[10, 10] = 21
    save_mask(voc_root / "SegmentationClass" / "2007_000032.png", mask)
    dataset = VOCDataset(voc_root, "train")
    dataset.validate()  # headers only
    message = r"2007_000032\.png: mask value 21 is neither a class index 0..20 nor 255"
    with pytest.raises(DataError, match=message):
        dataset.validate(check_pixels=True)
    with pytest.raises(DataError, match=message):
        dataset.labels("2007_000032")


def test_bad_classes_file(voc_root):
    (voc_root / "classes.txt").write_text("background\n")
    with pytest.raises(DataError, match=r"classes\.txt: needs background and at least one object class"):
        VOCDataset(voc_root, "train")
    (voc_root / "classes.txt").write_text("background\ncat\ncat\n")
    with pytest.raises(DataError, match=r"classes\.txt: class names must be unique"):
        VOCDataset(voc_root, "train")
    (voc_root / "classes.txt").write_text("background\ncat\n\n")
    # A 2-class dataset rejects VOC masks whose values go beyond 1.
    with pytest.raises(DataError, match="mask value 15 is neither a class index 0..1 nor 255"):
        VOCDataset(voc_root, "train").load_mask("2007_000032")
