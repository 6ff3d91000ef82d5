"""What `dvc metrics show` / `dvc plots show` get from the eval stages: headline metrics only, per-class IoU
in per_class.csv, a warning when the best CAM threshold sits at an end of the sweep, and eval_seg's
headline protocol named in its metrics."""
import csv
import json
from pathlib import Path

import pytest

from pipeline.errors import ConfigError

from stages import data, eval_cam, eval_seg, synthetic, train_seg
from stages.common import evaluate_mask_dir, open_split
from test_inspect import _fake_cams, _params


def test_eval_cam_headline_metrics_per_class_file_and_sweep_end_warning(tmp_path, capsys):
    params = _params(tmp_path)
    synthetic.run(params)
    data.run(params)
    _fake_cams(params)  # background scores up to 0.5, objects above 0.7: the best threshold is inside
    metrics = eval_cam.run(params)
    assert "warning" not in capsys.readouterr().err
    out = Path(params.paths.outputs) / "eval_cam" / "cam"
    assert json.loads((out / "metrics.json").read_text()) == {k: metrics[k] for k in ("miou", "best_threshold",
                                                                                       "split", "protocol", "seconds")}
    stored = json.loads((out / "details.json").read_text())
    assert "per_class_iou" not in stored and set(stored) == {"method", "miou", "best_threshold", "protocol", "protocol_description",
                                                             "all_background_miou", "num_images", "split",
                                                             "seconds"}
    assert stored["split"] == "train" and stored["protocol"] == "multi_scale_flip"
    assert stored["protocol_description"].startswith("cam CAM, multi-scale")
    with open(out / "per_class.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    classes = open_split(params, "train")[1]["classes"]
    assert [r["class"] for r in rows] == classes
    assert {r["class"]: (float(r["iou"]) if r["iou"] else None) for r in rows} == metrics["per_class_iou"]

    narrow = _params(tmp_path, "eval_cam.threshold_max=0.1")
    assert eval_cam.run(narrow)["best_threshold"] == 0.1
    err = capsys.readouterr().err
    assert "best threshold 0.1 is the highest of the sweep" in err and "eval_cam.threshold_max" in err


@pytest.mark.parametrize("headline", ["best", "single_scale", "multi_scale_crf"])
def test_eval_seg_names_its_headline_protocol_and_predictions_follow_it(tmp_path, headline):
    params = _params(tmp_path, "backbone.name=tiny", "backbone.pretrained=none", "backbone.output_stride=8",
                     "train_seg.labels=gt", "train_seg.steps=2", "train_seg.batch_size=2", "train_seg.crop_size=48",
                     "train_seg.val_every=2", "eval_seg.scales=[1.0, 0.5]", "eval_seg.flip=false",
                     "eval_seg.use_crf=true", f"eval_seg.headline={headline}")
    synthetic.run(params)
    data.run(params)
    train_seg.run(params)
    metrics = eval_seg.run(params)
    out = Path(params.paths.outputs) / "eval_seg" / "cam_gt"
    assert set(json.loads((out / "metrics.json").read_text())) == {"miou", "split", "protocol", "seconds"}
    stored = json.loads((out / "details.json").read_text())
    assert "per_class_iou" not in stored and (out / "per_class.csv").is_file()
    figures = {"single_scale": stored["miou_single_scale"], "multi_scale": stored["miou_multi_scale"],
               "multi_scale_crf": stored["miou_multi_scale_crf"]}
    if headline == "best":
        assert stored["miou"] == max(figures.values()) and figures[stored["protocol"]] == stored["miou"]
    elif headline == "single_scale":
        assert stored["miou"] == figures["single_scale"] and stored["protocol_description"] == "single scale"
    else:
        assert stored["protocol_description"] == "multi-scale 1,0.5 + CRF"
        assert stored["miou"] == stored["miou_multi_scale_crf"]
    val, index = open_split(params, "val")
    conf, _ = evaluate_mask_dir(val, out / "pred", len(index["classes"]), 1, "check")
    from pipeline.metrics import mean_iou
    assert mean_iou(conf) == pytest.approx(metrics["miou"], abs=1e-6)
    assert not list(out.glob("pred_*"))


def test_eval_seg_crf_headline_without_the_crf_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="eval_seg.*multi_scale_crf needs use_crf"):
        _params(tmp_path, "eval_seg.use_crf=false", "eval_seg.headline=multi_scale_crf")
