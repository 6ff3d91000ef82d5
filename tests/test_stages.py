"""Stages run in-process on a tiny generated dataset with the tiny backbone: the fully supervised switch of
train_seg, and the errors for missing inputs."""
import json
from pathlib import Path

import pytest

from pipeline.errors import WsssError
from stages import data, eval_seg, synthetic, train_seg
from stages.config import load_params
from conftest import REPO


@pytest.fixture
def tiny_params(tmp_path):
    def make(*overrides):
        return load_params(REPO / "params.yaml", [
            f"paths.outputs={tmp_path / 'out'}", f"synthetic.root={tmp_path / 'syn'}", f"data.root={tmp_path / 'syn'}",
            "synthetic.num_train=6", "synthetic.num_val=3", "synthetic.image_size=64",
            "backbone.name=tiny", "backbone.pretrained=none", "backbone.output_stride=8",
            "train_seg.steps=3", "train_seg.batch_size=2", "train_seg.crop_size=64", "train_seg.val_every=3",
            "eval_seg.scales=[1.0]", "workers=1", *overrides,
        ])
    return make


def test_upper_bound_switch_trains_on_ground_truth(tiny_params):
    params = tiny_params("train_seg.labels=gt")
    synthetic.run(params)
    data.run(params)
    train_metrics = train_seg.run(params)
    assert train_metrics["labels"] == "gt"
    metrics = eval_seg.run(params)
    out = Path(params.paths.outputs) / "eval_seg" / "cam_gt"
    assert json.loads((out / "details.json").read_text())["labels"] == "gt"
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["num_images"] == 3
    assert len(list((out / "pred").glob("*.png"))) == 3


def test_pseudo_labels_need_the_crf_stage(tiny_params):
    params = tiny_params()
    synthetic.run(params)
    data.run(params)
    with pytest.raises(WsssError, match="crf"):
        train_seg.run(params)
    assert not (Path(params.paths.outputs) / "train_seg").exists()


def test_compare_tabulates_every_evaluated_method(tiny_params, capsys):
    from pipeline.engine.atomic import write_json
    from stages import compare

    params = tiny_params()
    out = Path(params.paths.outputs)
    with pytest.raises(WsssError, match="no method"):
        compare.run(params)
    write_json(out / "eval_cam" / "cam" / "metrics.json", {"miou": 0.40, "best_threshold": 0.3})
    write_json(out / "eval_cam" / "seam" / "metrics.json", {"miou": 0.45, "best_threshold": 0.25})
    write_json(out / "train_cls" / "seam" / "metrics.json", {"seconds": 12.0})
    rows = compare.run(params)
    assert [r["method"] for r in rows] == ["cam", "seam"]
    table = (out / "compare" / "methods.md").read_text()
    assert "| seam | 45.0 | +5.0 | 0.25 | 12 |" in table
    assert table in capsys.readouterr().out


def test_missing_inputs_name_the_method_to_run(tiny_params):
    from stages import cam, overlays

    params = tiny_params("method=seam")
    synthetic.run(params)
    data.run(params)
    with pytest.raises(WsssError, match="train-cls --method seam"):
        cam.run(params)
    with pytest.raises(WsssError, match="cam --method seam"):
        overlays.run(params)
    assert not (Path(params.paths.outputs) / "overlays").exists()
