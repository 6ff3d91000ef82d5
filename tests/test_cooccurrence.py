"""The class co-occurrence diagnostic (pipeline/report/cooccurrence.py): counts on a hand-made label set, the
classes never alone, the IoU beside them, the files the data stage writes, its DVC heatmap and the report."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.errors import DataError
from pipeline.report.cooccurrence import count_cooccurrence, cooccurrence_table, write_cooccurrence
from stages import data, synthetic

from conftest import REPO
from test_inspect import _params, built  # noqa: F401  (the report fixture)

CLASSES = ["background", "face", "body", "boat", "cow", "sheep"]
# face always with body (3 images), body once alone, boat twice alone and once with a cow (never alone),
# sheep absent, one image without any object
LABELS = {"a": [1, 2], "b": [2, 1], "c": [1, 2], "d": [2], "e": [3], "f": [3], "g": [3, 4], "h": []}


def test_counts_and_never_alone_on_hand_made_labels():
    co = count_cooccurrence(LABELS, CLASSES)
    assert co.classes == CLASSES[1:] and co.num_images == 8
    assert co.images.tolist() == [3, 4, 3, 1, 0]
    assert co.alone.tolist() == [0, 1, 2, 0, 0]
    assert co.together[0, 1] == co.together[1, 0] == 3 and co.together[2, 3] == 1
    assert np.array_equal(np.diag(co.together), co.images) and np.array_equal(co.together, co.together.T)
    assert co.never_alone.tolist() == [True, False, False, True, False]  # sheep absent: not flagged


def test_table_rows_name_the_partner_and_carry_the_iou(tmp_path):
    per_class = tmp_path / "per_class.csv"
    per_class.write_text("class,iou\nbackground,0.8\nface,0.17\nbody,0.3\nboat,\ncow,0.6\nsheep,\n")
    rows = {r["class"]: r for r in cooccurrence_table(LABELS, CLASSES, per_class)}
    assert rows["face"] == {"class": "face", "images": 3, "alone": 0, "never_alone": True, "partner": "body",
                            "with_partner": 3, "partner_share": 1.0, "iou": 0.17}
    body = rows["body"]
    assert (body["partner"], body["partner_share"], body["never_alone"]) == ("face", 0.75, False)
    assert (rows["cow"]["partner"], rows["cow"]["never_alone"]) == ("boat", True)
    assert rows["boat"]["iou"] is None and rows["sheep"]["partner"] == "" and rows["sheep"]["partner_share"] is None
    assert all(r["iou"] is None for r in cooccurrence_table(LABELS, CLASSES, tmp_path / "missing.csv"))
    (tmp_path / "bad.csv").write_text("name,score\nface,1\n")
    with pytest.raises(DataError, match="bad.csv: expected the columns class,iou"):
        cooccurrence_table(LABELS, CLASSES, tmp_path / "bad.csv")


def test_out_of_range_label_names_the_image():
    with pytest.raises(DataError, match="image x has label 9"):
        count_cooccurrence({"x": [9]}, CLASSES)


def test_written_files_give_the_heatmap_counts(tmp_path):
    write_cooccurrence(tmp_path, LABELS, CLASSES)
    with open(tmp_path / "cooccurrence_pairs.csv", newline="") as fh:
        cells = Counter((r["class"], r["with"]) for r in csv.DictReader(fh))
    # off the diagonal: images with both classes; on it: images where the class is alone
    assert cells == {("face", "body"): 3, ("body", "face"): 3, ("body", "body"): 1, ("boat", "boat"): 2,
                     ("boat", "cow"): 1, ("cow", "boat"): 1}
    with open(tmp_path / "cooccurrence.csv", newline="") as fh:
        rows = {r["class"]: r for r in csv.DictReader(fh)}
    assert rows["face"]["never_alone"] == "True" and rows["face"]["partner_share"] == "1.0"
    assert rows["sheep"]["images"] == "0" and rows["sheep"]["partner_share"] == ""


def test_data_stage_writes_the_train_split_cooccurrence(tmp_path):
    params = _params(tmp_path)
    synthetic.run(params)
    data.run(params)
    out = Path(params.paths.outputs) / "data"
    index = json.loads((out / "index.json").read_text())
    co = count_cooccurrence(index["splits"][params.data.train_split]["labels"], index["classes"])
    with open(out / "cooccurrence.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["class"] for r in rows] == index["classes"][1:]
    assert [int(r["images"]) for r in rows] == co.images.tolist()
    assert [int(r["alone"]) for r in rows] == co.alone.tolist()
    with open(out / "cooccurrence_pairs.csv", newline="") as fh:
        pairs = list(csv.DictReader(fh))
    assert len(pairs) == int(co.together.sum() - co.images.sum() + co.alone.sum())


def test_dvc_plot_is_a_titled_heatmap_of_the_pairs():
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    entry = next(p for p in plots if "${paths.outputs}/data/cooccurrence_pairs.csv" in p)
    spec = entry["${paths.outputs}/data/cooccurrence_pairs.csv"]
    assert spec["template"] == "confusion" and (spec["x"], spec["y"]) == ("class", "with")
    assert spec["title"] and spec["x_label"] and spec["y_label"]


def test_inspect_report_holds_the_cooccurrence_with_cam_iou(built):  # noqa: F811
    params, *_, report, out = built
    section = report["cooccurrence"]
    assert section["split"] == params.data.train_split
    with open(Path(params.paths.outputs) / "eval_cam" / "cam" / "per_class.csv", newline="") as fh:
        iou = {r["class"]: (float(r["iou"]) if r["iou"] else None) for r in csv.DictReader(fh)}
    assert [r["class"] for r in section["rows"]] == report["classes"][1:]
    assert all(r["iou"] == iou[r["class"]] for r in section["rows"])
    assert "renderCooccurrence" in (out / "report.js").read_text()
