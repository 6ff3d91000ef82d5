"""A tiny `dvc repro` on a small generated dataset: the DAG runs, writes its metrics, caches, and the CAMs
beat an all-background guess."""
import json

import pytest

from conftest import make_project, run_dvc

pytestmark = pytest.mark.slow

SMALL = {
    "synthetic.num_train": 32,
    "synthetic.num_val": 8,
    "synthetic.image_size": 96,
    "backbone.name": "efficientnet_lite0",
    "backbone.pretrained": "imagenet",
    "train_cls.epochs": 4,
    "train_cls.batch_size": 8,
    "train_cls.crop_size": 96,
    "cam.scales": [1.0, 0.5],
}


def test_dvc_repro_runs_caches_and_beats_background(tmp_path):
    project = make_project(tmp_path, SMALL)
    run_dvc(project, "repro")
    outputs = project / "outputs"
    metrics = json.loads((outputs / "eval_cam" / "cam" / "metrics.json").read_text())
    assert set(metrics["per_class_iou"]) >= {"background"}
    assert 0.0 <= metrics["best_threshold"] <= 0.59
    assert metrics["miou"] > metrics["all_background_miou"]
    assert len(list((outputs / "cam" / "cam").glob("*.npz"))) == 32
    curve = (outputs / "eval_cam" / "cam" / "curve.csv").read_text().splitlines()
    assert curve[0] == "threshold,miou" and len(curve) == 61

    second = run_dvc(project, "repro")
    assert "Running stage" not in second.stdout

    params = (project / "params.yaml").read_text().replace("flip: true", "flip: false")
    (project / "params.yaml").write_text(params)
    third = run_dvc(project, "repro")
    ran = {line.split("'")[1] for line in third.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"cam", "eval_cam"}
