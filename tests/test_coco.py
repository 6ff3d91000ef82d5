"""COCO 2014 -> VOC layout (pipeline/data/coco.py) on a small COCO-format fixture built here: gapped category
ids, polygons, compressed and uncompressed RLE, an overlap, crowd regions, an image without annotations."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from typer.testing import CliRunner

from pipeline.data.coco import convert_coco
from pipeline.data.image_files import load_mask
from pipeline.data.voc import VOCDataset
from pipeline.errors import DataError
from stages.cli import app

H, W = 40, 60
CATEGORIES = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]


def _square(y0, y1, x0, x1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]  # polygon: the region [y0, y1) x [x0, x1) (pixel centres)


def _rle(y0, y1, x0, x1, compressed=True):
    m = np.zeros((H, W), np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    rle = coco_mask.encode(np.asfortranarray(m))
    if compressed:
        return {"size": rle["size"], "counts": rle["counts"].decode()}
    flat = m.ravel(order="F")  # uncompressed RLE: run lengths starting with zeros, column-major
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])))
    return {"size": [H, W], "counts": np.diff(np.concatenate([[0], changes])).tolist()[: -1] or [H * W]}


def _coco_tree(root: Path) -> Path:
    anns = {
        "train2014": [
            # image 1: a big person polygon with a small compressed-RLE car inside (the car must win),
            # a crowd of people partly over the person (covered pixels keep the person) and over background
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 600.0, "segmentation": _square(5, 35, 5, 25)},
            {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 50.0, "segmentation": _rle(10, 15, 10, 20)},
            {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 300.0,
             "segmentation": _rle(20, 30, 20, 50, compressed=False)},
            # image 2: only a toothbrush (category 90 -> class 3)
            {"id": 4, "image_id": 2, "category_id": 90, "iscrowd": 0, "area": 100.0, "segmentation": _square(0, 10, 0, 10)},
        ],
        "val2014": [
            {"id": 5, "image_id": 4, "category_id": 3, "iscrowd": 0, "area": 100.0, "segmentation": _rle(0, 10, 50, 60)},
        ],
    }
    images = {"train2014": [1, 2, 3], "val2014": [4]}  # image 3 has no annotation: not in the split
    (root / "annotations").mkdir(parents=True)
    for split, ids in images.items():
        (root / split).mkdir()
        infos = []
        for i in ids:
            name = f"COCO_{split}_{i:012d}.jpg"
            mode = "L" if i == 2 else "RGB"  # COCO has grey photos
            Image.new(mode, (W, H), 100).save(root / split / name)
            infos.append({"id": i, "file_name": name, "height": H, "width": W})
        data = {"images": infos, "annotations": anns[split], "categories": CATEGORIES}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def test_convert_writes_voc_layout_masks_labels_and_splits(tmp_path):
    coco = _coco_tree(tmp_path / "coco")
    counts = convert_coco(coco, tmp_path / "voc", workers=1)
    out = tmp_path / "voc"
    assert counts == {"train2014": 2, "val2014": 1}
    assert (out / "classes.txt").read_text().split() == ["background", "person", "car", "toothbrush"]
    train = VOCDataset(out, "train2014")
    assert train.ids == ["COCO_train2014_000000000001", "COCO_train2014_000000000002"]
    mask = load_mask(out / "SegmentationClass" / "COCO_train2014_000000000001.png")
    assert mask.shape == (H, W)
    assert mask[12, 15] == 2          # the small car over the person
    assert mask[30, 10] == 1          # person
    assert mask[25, 22] == 1          # crowd over the person: the person keeps it
    assert mask[25, 40] == 255        # crowd over background: ignored
    assert mask[2, 50] == 0           # background
    assert set(np.unique(mask)) == {0, 1, 2, 255}
    assert train.label_indices("COCO_train2014_000000000002") == [3]
    assert train.load_image("COCO_train2014_000000000002").shape == (H, W, 3)
    labels = json.loads((out / "image_labels.json").read_text())
    assert labels["train2014"]["COCO_train2014_000000000001"] == [1, 2]
    assert labels["val2014"] == {"COCO_val2014_000000000004": [2]}
    assert VOCDataset(out, "val2014").load_mask("COCO_val2014_000000000004")[5, 55] == 2
    assert (out / "JPEGImages" / "COCO_train2014_000000000001.jpg").is_symlink()


def test_limit_and_rerun_replace_an_earlier_conversion(tmp_path):
    coco = _coco_tree(tmp_path / "coco")
    convert_coco(coco, tmp_path / "voc", limit=1, workers=1, link=False)
    assert (tmp_path / "voc" / "ImageSets/Segmentation/train2014.txt").read_text().split() == ["COCO_train2014_000000000001"]
    assert convert_coco(coco, tmp_path / "voc", workers=1) == {"train2014": 2, "val2014": 1}


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    coco = _coco_tree(tmp_path / "coco")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not a COCO conversion"):
        convert_coco(coco, mine)
    assert (mine / "keep.txt").is_file()
    data = json.loads((coco / "annotations/instances_val2014.json").read_text())
    data["annotations"][0]["category_id"] = 2
    (coco / "annotations/instances_val2014.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="category 2 is not in 'categories'"):
        convert_coco(coco, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(app, ["coco", str(coco), str(tmp_path / "out")])
    assert result.exit_code == 2 and "category 2" in result.output
    (coco / "annotations/instances_val2014.json").unlink()
    with pytest.raises(DataError, match="instances_val2014.json: COCO instance annotations not found"):
        convert_coco(coco, tmp_path / "out", workers=1)


def test_cli_converts(tmp_path):
    coco = _coco_tree(tmp_path / "coco")
    result = CliRunner().invoke(app, ["coco", str(coco), str(tmp_path / "voc"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "train2014: 2 images, val2014: 1 images" in result.output
