"""ReCAM (pipeline/cam/recam.py, stages/recam.py): the class-specific features and the softmax CE on hand-made
inputs, which parts train, the read-out weights, and the stage on a tiny generated dataset."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from pipeline.cam.archive import load_cam
from pipeline.cam.maps import normalize_cams
from pipeline.cam.methods import build_method
from pipeline.cam.recam import ReCAM, class_masked_features, fold_predictor, recam_loss
from pipeline.engine.hooks import freeze_batchnorm
from pipeline.errors import ConfigError, WsssError
from pipeline.models.backbones.tiny import TinyBackbone
from stages import cam, data, synthetic, train_cls
from stages import recam as recam_stage
from stages.checkpoints import load_method
from stages.cli import app
from stages.config import RecamParams, load_params

from conftest import REPO, coloured_squares


def halves() -> torch.Tensor:
    """One image's 2-channel feature map (1, 2, 2, 4): channel 0 on the left half, channel 1 on the right."""
    features = torch.zeros(1, 2, 2, 4)
    features[0, 0, :, :2] = 1.0
    features[0, 1, :, 2:] = 1.0
    return features


def identity_predictor(scale: float = 4.0) -> nn.Linear:
    predictor = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        predictor.weight.copy_(scale * torch.eye(2))
    return predictor


def test_masked_features_pool_each_class_region():
    features = halves()
    cams = torch.zeros(1, 2, 2, 4)
    cams[0, 0, :, :2] = 1.0  # class 0 on the left half
    cams[0, 1] = 1.0  # class 1 everywhere
    masked = class_masked_features(features, cams)
    assert torch.allclose(masked, torch.tensor([[[0.5, 0.0], [0.5, 0.5]]]))
    # the authors' broadcast (B, K, C, h, w) product, on random inputs
    features, cams = torch.rand(2, 5, 3, 4), torch.rand(2, 3, 3, 4)
    expected = (cams.unsqueeze(2) * features.unsqueeze(1)).flatten(3).mean(-1)
    assert torch.allclose(class_masked_features(features, cams), expected, atol=1e-6)


def test_the_cams_that_weight_the_features_peak_at_one():
    cams = torch.tensor([[[[-1.0, 2.0], [0.5, 4.0]]]])
    assert torch.allclose(normalize_cams(cams), torch.tensor([[[[0.0, 0.5], [0.125, 1.0]]]]), atol=1e-5)


def test_overlapping_cams_cost_log2_and_separated_ones_less():
    features, predictor, labels = halves(), identity_predictor(), torch.ones(1, 2)
    overlapping = torch.ones(1, 2, 2, 4)  # both classes claim every pixel: their features are identical
    loss, accuracy = recam_loss(predictor(class_masked_features(features, overlapping)), labels)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    separated = torch.zeros(1, 2, 2, 4)
    separated[0, 0, :, :2] = 1.0
    separated[0, 1, :, 2:] = 1.0
    logits = predictor(class_masked_features(features, separated))
    loss_separated, accuracy = recam_loss(logits, labels)
    assert loss_separated.item() == pytest.approx(math.log1p(math.exp(-2.0)), abs=1e-6)  # logits (2, 0)
    assert loss_separated < loss
    assert logits[0].argmax(-1).tolist() == [0, 1] and accuracy.item() == 1.0  # each class's features


def test_loss_averages_labelled_classes_and_divides_by_the_batch():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[0.0, 3.0], [5.0, 5.0]], [[1.0, 1.0], [1.0, 1.0]]])
    labels = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])  # image 2 unlabelled: adds 0, counts in B
    loss, accuracy = recam_loss(logits, labels)
    first = math.log1p(math.exp(-2.0))  # both of image 0's classes right by a margin of 2
    second = math.log1p(math.exp(3.0))  # image 1's class 0 wrong by 3; its class 1 is not labelled
    assert loss.item() == pytest.approx((first + second) / 3, abs=1e-6)
    assert accuracy.item() == pytest.approx(2 / 3)


def test_training_step_is_bce_plus_weighted_sce():
    torch.manual_seed(0)
    images, labels = coloured_squares(batch=4, size=32)
    method = build_method("cam", TinyBackbone(output_stride=8), 3)
    objective = ReCAM(method, loss_weight=0.5)
    terms = objective.training_step(images, labels)
    assert set(terms) == {"loss", "cls", "recam", "acc"}
    assert terms["loss"].item() == pytest.approx(terms["cls"].item() + 0.5 * terms["recam"].item(), rel=1e-5)
    logits = method.cam(images).mean(dim=(2, 3))
    assert terms["cls"].item() == pytest.approx(F.multilabel_soft_margin_loss(logits, labels).item(), rel=1e-5)
    with pytest.raises(ConfigError, match="recam.loss_weight"):
        ReCAM(method, loss_weight=-1.0)


def test_gradients_reach_the_network_and_predictor_only():
    """SEAM: backbone, classifier and predictor train (the authors train the whole network and the new
    layer); the PCM is not on the loss's path, frozen batch norm stays frozen."""
    torch.manual_seed(0)
    images, labels = coloured_squares(batch=2, size=32)
    method = build_method("seam", TinyBackbone(output_stride=8), 3)
    objective = ReCAM(method)
    objective.train()
    freeze_batchnorm(objective.backbone)
    objective.training_step(images, labels)["loss"].backward()
    assert objective.predictor.weight.grad.abs().sum() > 0
    assert method.classifier.weight.grad.abs().sum() > 0
    convs = [m for m in method.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in convs)
    assert all(p.grad is None for p in method.pcm.parameters())
    norms = [p for m in method.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for p in m.parameters()]
    assert norms and all(p.grad is None for p in norms)

    network, head = objective.param_groups(lr=5e-5, head_lr_mult=10.0)
    assert network["lr"] == 5e-5 and head["lr"] == pytest.approx(5e-4)
    assert [id(p) for p in head["params"]] == [id(objective.predictor.weight)]
    assert {id(p) for p in network["params"]} == {id(p) for p in method.parameters() if p.requires_grad}


def test_folded_classifier_reads_out_the_authors_reactivated_cam():
    """make_recam.py's forward2: ReLU(conv(f, P * W)); the method's own cam() gives it after folding."""
    torch.manual_seed(0)
    method = build_method("cam", TinyBackbone(output_stride=8), 3).eval()
    predictor = nn.Linear(method.backbone.out_channels, 3, bias=False)
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        features = method.classifier_features(images)
        expected = F.relu(F.conv2d(features, predictor.weight[..., None, None] * method.classifier.weight))
        fold_predictor(method, predictor)
        assert torch.allclose(F.relu(method.cam(images)), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="predictor"):
        fold_predictor(method, nn.Linear(5, 3, bias=False))
    method.classifier = nn.Conv2d(method.backbone.out_channels, 3, 1, bias=True)
    with pytest.raises(ConfigError, match="bias-free 1x1 classifier"):
        ReCAM(method)


@pytest.mark.parametrize("name", ["ppl", "cpn"])
def test_every_method_fine_tunes_and_reads_out(name):
    torch.manual_seed(0)
    images, labels = coloured_squares(batch=2, size=32)
    options = {"granularities": [1, 2]} if name == "ppl" else {}
    method = build_method(name, TinyBackbone(output_stride=8), 3, **options)
    objective = ReCAM(method)
    assert torch.isfinite(objective.training_step(images, labels)["loss"])
    with torch.no_grad():
        assert fold_predictor(method.eval(), objective.predictor).cam(images).shape[:2] == (2, 3)


@pytest.fixture
def tiny(tmp_path):
    def make(*overrides):
        return load_params(REPO / "params.yaml", [
            f"paths.outputs={tmp_path / 'out'}", f"synthetic.root={tmp_path / 'syn'}", f"data.root={tmp_path / 'syn'}",
            "synthetic.num_train=4", "synthetic.num_val=2", "synthetic.image_size=64",
            "backbone.name=tiny", "backbone.pretrained=none", "backbone.output_stride=8",
            "train_cls.epochs=1", "train_cls.batch_size=2", "train_cls.crop_size=64", "cam.scales=[1.0]",
            "cam.loader_workers=0", "cam.writers=0", "recam.epochs=1", "recam.lr=0.01", "workers=1", *overrides,
        ])
    return make


def test_stage_fine_tunes_and_cam_reads_the_reactivated_classifier(tiny, tmp_path):
    plain = tiny()
    synthetic.run(plain)
    data.run(plain)
    out = Path(plain.paths.outputs)
    with pytest.raises(WsssError, match="wsss-pipe train-cls --method cam"):
        recam_stage.run(tiny("recam.enabled=true"))
    assert not (out / "recam").exists()
    train_cls.run(plain)
    assert recam_stage.run(plain) == {"enabled": False}  # disabled: a note, the plain classifier
    assert json.loads((out / "recam" / "cam" / "metrics.json").read_text()) == {"enabled": False}
    assert recam_stage.classifier_checkpoint(plain) == out / "train_cls" / "cam" / "model.pt"
    cam.run(plain)
    ids = sorted(p.stem for p in (out / "cam" / "cam").glob("*.npz"))
    before = {i: load_cam(out / "cam" / "cam" / f"{i}.npz")[0] for i in ids}

    enabled = tiny("recam.enabled=true")
    with pytest.raises(WsssError, match="wsss-pipe recam --method cam"):
        cam.run(enabled)
    result = CliRunner().invoke(app, ["recam", "-p", str(REPO / "params.yaml"),
                                      *sum((["--set", f"{k}={v}"] for k, v in _overrides(enabled).items()), [])])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "recam" / "cam" / "details.json").read_text())
    assert metrics["enabled"] is True and {"loss", "cls", "recam", "acc", "seconds"} <= set(metrics)
    assert set(json.loads((out / "recam" / "cam" / "metrics.json").read_text())) == {"loss", "seconds"}
    assert (out / "recam" / "cam" / "history.csv").read_text().splitlines()[0] == "epoch,loss,cls,recam,acc"

    method, checkpoint = load_method(out / "recam" / "cam" / "model.pt", torch.device("cpu"))
    folded = checkpoint["recam"]["predictor"][..., None, None] * checkpoint["recam"]["classifier"]
    assert torch.allclose(method.classifier.weight, folded)
    assert cam.run(enabled) == 4
    after = {i: load_cam(out / "cam" / "cam" / f"{i}.npz")[0] for i in ids}
    assert all(after[i].shape == before[i].shape for i in ids)
    assert any(not np.allclose(after[i], before[i], atol=1e-3) for i in ids)


def _overrides(params) -> dict:
    dump = params.model_dump(mode="json")
    keys = ["paths.outputs", "data.root", "backbone.name", "backbone.pretrained", "backbone.output_stride",
            "train_cls.batch_size", "train_cls.crop_size", "recam.enabled", "recam.epochs", "recam.lr", "workers"]
    values = {}
    for key in keys:
        node = dump
        for part in key.split("."):
            node = node[part]
        values[key] = json.dumps(node) if not isinstance(node, str) else node
    return values


def test_defaults_are_the_authors_but_the_measured_schedule_and_bad_values_name_the_key(tmp_path):
    params = load_params(REPO / "params.yaml")
    cfg = params.recam
    assert (cfg.enabled, cfg.loss_weight, cfg.weight_decay) == (False, 1.0, 1e-4)
    assert cfg.lr == pytest.approx(5e-5) and cfg.lr * cfg.head_lr_mult == pytest.approx(5e-4)
    # the departures measured on MSRC (pipeline/cam/recam.py): real momentum, 12 epochs
    assert (cfg.epochs, cfg.momentum) == (12, pytest.approx(0.9))
    assert RecamParams().epochs == 12 and RecamParams().momentum == pytest.approx(0.9)
    with pytest.raises(ConfigError, match="recam.momentum"):
        load_params(REPO / "params.yaml", ["recam.momentum=1.0"])
    with pytest.raises(ConfigError, match="recam.epochs"):
        load_params(REPO / "params.yaml", ["recam.epochs=0"])


@pytest.mark.slow
def test_dvc_stage_wiring(tmp_path):
    """`dvc repro cam` runs recam (a note while disabled); enabling it reruns recam and cam, not train_cls."""
    from conftest import make_project, run_dvc

    project = make_project(tmp_path, {
        "synthetic.num_train": 4, "synthetic.num_val": 2, "synthetic.image_size": 48, "workers": 1,
        "backbone.name": "tiny", "backbone.pretrained": "none", "backbone.output_stride": 8,
        "train_cls.epochs": 1, "train_cls.batch_size": 2, "train_cls.crop_size": 48,
        "cam.scales": [1.0], "cam.loader_workers": 0, "recam.epochs": 1})
    ran = lambda result: {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")}  # noqa: E731
    assert {"train_cls", "recam", "cam"} <= ran(run_dvc(project, "repro", "cam"))
    assert ran(run_dvc(project, "repro", "cam")) == set()
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("enabled: false", "enabled: true", 1))
    assert ran(run_dvc(project, "repro", "cam")) == {"recam", "cam"}
    assert (project / "outputs" / "recam" / "cam" / "model.pt").is_file()
