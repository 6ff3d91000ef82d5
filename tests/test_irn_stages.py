"""IRN's stages in-process on a tiny generated dataset with the tiny backbone: relation labels, boundary
training, the boundary walk, its evaluation and the CRF reading it (``crf.source: irn``)."""
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cam.archive import load_cam
from pipeline.data.image_files import load_mask
from pipeline.errors import ConfigError, WsssError
from stages import cam, crf, data, eval_cam, eval_walk, prop_labels, synthetic, train_cls, train_prop, walk
from stages.config import load_params
from conftest import REPO


@pytest.fixture
def irn_params(tmp_path):
    return load_params(REPO / "params.yaml", [
        f"paths.outputs={tmp_path / 'out'}", f"synthetic.root={tmp_path / 'syn'}", f"data.root={tmp_path / 'syn'}",
        "synthetic.num_train=4", "synthetic.num_val=2", "synthetic.image_size=64",
        "backbone.name=tiny", "backbone.pretrained=none", "backbone.output_stride=8",
        "train_cls.epochs=1", "train_cls.batch_size=2", "train_cls.crop_size=64", "cam.scales=[1.0]",
        "propagation.irn.train.epochs=1", "propagation.irn.train.batch_size=2", "propagation.irn.train.crop_size=64", "propagation.irn.train.radius=5",
        "propagation.irn.walk.exp_times=3", "propagation.irn.walk.bg_threshold=0.25", "crf.source=irn", "crf.bg_threshold=0.2", "workers=1",
    ])


def test_irn_stages_write_labels_model_walk_and_pseudo_masks(irn_params):
    params = irn_params
    synthetic.run(params)
    data.run(params)
    with pytest.raises(WsssError, match="prop-labels irn"):
        train_prop.run(params, "irn")
    train_cls.run(params)
    cam.run(params)
    with pytest.raises(WsssError, match="eval-cam"):  # thresholds auto: calibrated to eval_cam's best one
        prop_labels.run(params, "irn")
    eval_cam.run(params)
    assert prop_labels.run(params, "irn") == 4
    out = Path(params.paths.outputs)
    ids = sorted(p.stem for p in (out / "cam" / "cam").glob("*.npz"))
    labels = load_mask(out / "prop_labels" / "irn" / "cam" / f"{ids[0]}.png")
    cams, keys = load_cam(out / "cam" / "cam" / f"{ids[0]}.npz")
    assert labels.shape == cams.shape[1:]
    assert set(np.unique(labels)) <= {0, 255, *keys.tolist()}

    metrics = train_prop.run(params, "irn")
    assert {"loss", "fg_pos", "bg_pos", "neg", "seconds"} <= set(metrics)
    assert (out / "train_prop" / "irn" / "cam" / "model.pt").is_file()

    assert walk.run(params, "irn") == 4
    scores, score_keys = load_cam(out / "walk" / "irn" / "cam" / f"{ids[0]}.npz")
    assert score_keys[0] == 0 and scores.shape == (1 + keys.size,) + cams.shape[1:]
    np.testing.assert_allclose(scores[0], params.propagation["irn"].walk.bg_threshold, atol=1e-3)
    walk_labels = load_mask(out / "walk" / "irn" / "cam" / f"{ids[0]}.png")
    assert set(np.unique(walk_labels)) <= {0, *keys.tolist()}

    result = eval_walk.run(params, "irn")
    assert 0.0 <= result["miou"] <= 1.0
    assert json.loads((out / "eval_walk" / "irn" / "cam" / "metrics.json").read_text())["miou"] == result["miou"]
    assert crf.run(params) == 4
    assert len(list((out / "crf" / "cam").glob("*.png"))) == 4


def test_irn_params_are_validated():
    with pytest.raises(ConfigError, match="propagation.irn.labels"):
        load_params(REPO / "params.yaml", ["propagation.irn.labels.bg_threshold=0.5"])
    with pytest.raises(ConfigError, match="propagation.irn.walk.bg_threshold"):
        load_params(REPO / "params.yaml", ["propagation.irn.walk.bg_threshold=2"])
    with pytest.raises(ConfigError, match="crf.source"):
        load_params(REPO / "params.yaml", ["crf.source=rw"])
    params = load_params(REPO / "params.yaml")
    assert (params.propagation["irn"].labels.fg_threshold, params.propagation["irn"].labels.bg_threshold) == ("auto", "auto")
    assert (params.propagation["irn"].walk.beta, params.propagation["irn"].walk.exp_times, params.propagation["irn"].walk.radius) == (10.0, 3, 5)
    assert (params.propagation["irn"].train.radius, params.propagation["irn"].train.lr) == (10, 0.1)
