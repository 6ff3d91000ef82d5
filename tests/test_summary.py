"""`wsss-pipe summary`: the run's table from the stages' records (fake records of a tiny outputs tree)."""
import json

import pytest
from typer.testing import CliRunner

from stages.cli import app
from stages.records import write_metrics

runner = CliRunner()

RECORDS = {  # (stage, tag): record, as the stages write them
    ("train_cls", "cam"): {"loss": 0.4, "cls": 0.4, "seconds": 30.0},
    ("eval_cam", "cam"): {"method": "cam", "miou": 0.40, "best_threshold": 0.3, "all_background_miou": 0.15,
                          "num_images": 64, "seconds": 2.0},
    ("train_prop/affinitynet", "cam"): {"loss": 0.2, "seconds": 10.0},
    ("eval_walk/affinitynet", "cam"): {"method": "cam", "miou": 0.45, "pixel_accuracy": 0.8, "num_images": 64, "seconds": 1.5},
    ("eval_pseudo", "cam"): {"method": "cam", "miou": 0.48, "seconds": 1.0},
    ("train_seg", "cam_pseudo"): {"labels": "pseudo", "loss": 0.3, "seconds": 100.0},
    ("eval_seg", "cam_pseudo"): {"labels": "pseudo", "miou": 0.44, "protocol": "multi_scale_crf",
                                 "protocol_description": "multi-scale 1,0.5 + CRF", "num_images": 8,
                                 "seconds": 4.0},
    ("train_seg", "cam_gt"): {"labels": "gt", "loss": 0.1, "seconds": 90.0},
    ("eval_seg", "cam_gt"): {"labels": "gt", "miou": 0.55, "protocol": "single_scale",
                             "protocol_description": "single scale", "num_images": 8, "seconds": 3.0},
}


@pytest.fixture
def run_tree(tmp_path):
    out = tmp_path / "outputs"
    for (stage, tag), record in RECORDS.items():
        (out / stage / tag).mkdir(parents=True)
        write_metrics(out / stage / tag, record)
    return out


def _summary(out, *args):
    result = runner.invoke(app, ["summary", "--set", f"paths.outputs={out}", "--set", "crf.source=affinitynet", *args],
                           env={"COLUMNS": "120"})
    return result


def test_json_rows_gains_ratio_and_absent_stages(run_tree):
    result = _summary(run_tree, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) == {"method", "outputs", "rows", "ratios", "never_alone"} and summary["method"] == "cam"
    assert summary["never_alone"] == []  # no data stage in this tree
    rows = {row["key"]: row for row in summary["rows"]}
    assert [row["key"] for row in summary["rows"]][:6] == ["background", "cam", "affinitynet", "irn", "pseudo", "pred"]
    for row in summary["rows"]:
        assert set(row) == {"key", "stage", "present", "miou", "refines", "gain", "setting", "seconds",
                            "total_seconds"}
    assert rows["background"]["miou"] == 0.15
    assert rows["cam"]["gain"] == pytest.approx(0.25) and rows["cam"]["refines"] == "background"
    assert rows["cam"]["setting"] == "threshold 0.3"
    assert rows["cam"]["seconds"] == {"train_cls": 30.0, "eval_cam": 2.0} and rows["cam"]["total_seconds"] == 32.0
    assert rows["affinitynet"]["gain"] == pytest.approx(0.05) and rows["affinitynet"]["refines"] == "cam"
    assert rows["pseudo"]["refines"] == "affinitynet" and rows["pseudo"]["gain"] == pytest.approx(0.03)  # crf.source=affinitynet
    assert rows["pred"]["gain"] == pytest.approx(-0.04) and rows["pred"]["refines"] == "pseudo"
    assert rows["pred"]["setting"] == "val (8 images), multi-scale 1,0.5 + CRF"
    assert rows["gt"]["present"] and rows["gt"]["gain"] is None
    for absent in ("irn", "single", "single_full"):
        assert not rows[absent]["present"] and rows[absent]["miou"] is None and rows[absent]["gain"] is None
    assert summary["ratios"] == {"pred": {"full": "gt", "ratio": pytest.approx(0.44 / 0.55, abs=1e-4)}}


def test_table_shows_figures_absent_stages_and_ratio(run_tree):
    result = _summary(run_tree)
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 2}
    assert "40.0" in lines["CAM"] and "+25.0" in lines["CAM"] and "threshold 0.3" in lines["CAM"]
    assert "32" in lines["CAM"] and "all background" in lines["CAM"]
    assert "45.0" in lines["AffinityNet walk"] and "+5.0" in lines["AffinityNet walk"]
    assert "-4.0" in lines["DeepLab"] and "multi-scale 1,0.5 + CRF" in lines["DeepLab"]
    assert "absent" in lines["IRN walk"] and "absent" in lines["single stage"]
    assert "0.80" in lines["DeepLab: weak/full"] and "DeepLab on GT" in lines["DeepLab: weak/full"]


def test_no_ground_truth_model_no_ratio(run_tree):
    import shutil

    shutil.rmtree(run_tree / "eval_seg" / "cam_gt")
    summary = json.loads(_summary(run_tree, "--json").stdout)
    assert summary["ratios"] == {}


@pytest.mark.parametrize("content, message", [("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object"),
                                              ('{"best_threshold": 0.3}', "'miou' missing")])
def test_corrupt_record_is_one_line_error_naming_it(run_tree, content, message):
    bad = run_tree / "eval_cam" / "cam" / "details.json"
    bad.write_text(content)
    result = _summary(run_tree, "--json")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and str(bad) in result.stderr and message in result.stderr


def test_classes_that_never_appear_alone_are_named_with_their_cam_iou(run_tree, tmp_path):
    """Issue 22's co-occurrence diagnostic in the summary: face always with body (MSRC's failure case)."""
    root = tmp_path / "data_root"
    root.mkdir()
    labels = {"a": [1, 2], "b": [1, 2], "c": [2], "d": [3]}  # face (1) only ever with body (2)
    (run_tree / "data").mkdir()
    (run_tree / "data" / "index.json").write_text(json.dumps(
        {"root": str(root), "classes": ["background", "face", "body", "boat"],
         "splits": {"train": {"ids": list(labels), "labels": labels}}}))
    (run_tree / "eval_cam" / "cam" / "per_class.csv").write_text("class,iou\nface,0.17\nbody,0.3\nboat,0.24\n")
    args = ("--set", f"data.root={root}", "--set", "data.train_split=train")
    summary = json.loads(_summary(run_tree, "--json", *args).stdout)
    assert [(r["class"], r["partner"], r["with_partner"], r["iou"]) for r in summary["never_alone"]] == [
        ("face", "body", 2, 0.17)]
    text = _summary(run_tree, *args).stdout
    assert "face never appears alone in train (2 of 2 images with body, CAM IoU 17.0)" in " ".join(text.split())
