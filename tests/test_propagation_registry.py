"""Contract tests every registered propagation method gets for free (as torchvision's test_models.py runs
every registered model), the dvc.yaml ``foreach`` lists against the registry, and a third method (an
identity walk registered here) running through the generic stages with only its class and params section."""
import numpy as np
import pytest
import torch
import yaml

from pipeline.models.backbones import build_backbone
from pipeline.propagation import (
    PropagationMethod,
    PropagationParams,
    StageContext,
    get_propagation,
    list_propagation,
    register_propagation,
    unregister_propagation,
)
from pipeline.propagation.sparse_walk import random_walk, transition_matrix
from pipeline.errors import ConfigError
from pipeline.settings import Section
from stages.config import load_params
from conftest import REPO

BUILT_IN = ["affinitynet", "irn"]


def _context(threshold=0.4):
    return StageContext(cam_threshold=lambda: threshold, crf_kernels=load_params(REPO / "params.yaml").crf.crf_kwargs(),
                        backbone=load_params(REPO / "params.yaml", ["backbone.name=tiny"]).backbone)


def _tiny_image(size=48):
    rng = np.random.default_rng(0)
    image = (rng.random((size, size, 3)) * 60).astype(np.uint8)
    image[8:30, 10:34] += 150
    cams = np.zeros((1, size, size), np.float32)
    cams[0, 8:30, 10:34] = 0.9
    return image, cams, np.array([3])


def test_builtin_methods_are_registered_and_unknown_names_fail():
    assert list_propagation()[:2] == BUILT_IN
    with pytest.raises(ConfigError, match="affinitynet, irn"):
        get_propagation("nope")


def test_dvc_yaml_foreach_lists_equal_the_registry():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in ("prop_labels", "train_prop", "walk", "eval_walk"):
        assert stages[stage]["foreach"] == BUILT_IN


def test_the_stage_table_names_the_registered_methods():
    """stages/table.py (imported by the CLI without torch) lists the methods itself: the registry's list."""
    from stages.table import PROPAGATION, STAGES

    assert list(PROPAGATION) == list_propagation()
    assert {s.name for s in STAGES.values() if s.item} == {f"{stage}@{name}" for name in BUILT_IN
                                                          for stage in ("prop_labels", "train_prop", "walk", "eval_walk")}


@pytest.mark.parametrize("name", BUILT_IN)
def test_relation_labels_shape_dtype_and_values(name):
    method = get_propagation(name)
    cfg = method.Params()
    settings, _ = method.label_settings(cfg, _context())
    image, cams, keys = _tiny_image()
    labels = method.relation_labels(image, cams, keys, **settings)
    assert labels.shape == image.shape[:2] and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 3, 255}
    assert (labels == 3).any() and (labels == 0).any()


@pytest.mark.parametrize("name", BUILT_IN)
def test_network_forward_loss_is_finite_and_backpropagates(name):
    method = get_propagation(name)
    spec = method.network_spec(method.Params(), _context())
    assert spec["backbone"] == "tiny"
    torch.manual_seed(0)
    network = method.build_network(spec, None)
    images = torch.rand(2, 3, 96, 96)  # AffinityNet's stride-8 grid needs >= 5 x 9 cells for PSA's pairs
    labels = torch.zeros(2, 96, 96, dtype=torch.long)
    labels[:, 24:72, 24:72] = 2
    labels[:, :4] = 255
    terms = network.training_step(images, labels)
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    grads = [p.grad for p in network.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", BUILT_IN)
def test_walk_writes_one_score_per_class_and_background(name):
    method = get_propagation(name)
    network = method.build_network(method.network_spec(method.Params(), _context()), None).eval()
    settings, _ = method.walk_settings(method.Params(), _context(0.3))
    image, cams, keys = _tiny_image()
    labels, scores = method.walk(network, image, cams, keys, "cpu", **settings)
    assert labels.shape == image.shape[:2] and labels.dtype == np.uint8
    assert scores.shape == (2,) + image.shape[:2] and scores.dtype == np.float32
    assert set(np.unique(labels)) <= {0, 3}


def test_shared_walk_core_known_answer_on_a_hand_made_affinity():
    # a 1x3 grid, radius 2 ("full" pairs: (0,1), (1,2)); a = 1 joins 0-1, a = 0 cuts 1-2: T rows
    # [1/2 1/2 0], [1/2 1/2 0], [0 0 1]; one step of v = (1, 0, 0) gives (1/2, 1/2, 0)
    affinities = torch.tensor([1.0, 0.0])
    transition = transition_matrix(affinities, 1, 3, 2, beta=1.0, pair_set="full")
    np.testing.assert_allclose(transition.to_dense().numpy(), [[.5, .5, 0], [.5, .5, 0], [0, 0, 1]])
    walked = random_walk(torch.tensor([[[1.0, 0.0, 0.0]]]), transition, logt=0)
    np.testing.assert_allclose(walked.numpy(), [[[0.5, 0.5, 0.0]]])


class IdentityLabels(Section):
    threshold: float = 0.5


class IdentityParams(PropagationParams):
    labels: IdentityLabels = IdentityLabels()


class _Scale(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.backbone = build_backbone("tiny", 8, pretrained=None)

    def training_step(self, images, labels):
        loss = (self.backbone(images)[-1].mean() * self.weight) ** 2
        return {"loss": loss}

    def param_groups(self, lr, head_lr_mult=1.0):
        return [{"params": list(self.parameters()), "lr": lr, "name": "all"}]


class IdentityWalk(PropagationMethod):
    """A trivial method: labels = CAM > threshold, no affinities, the walk returns the CAM itself."""

    title = "identity walk"
    Params = IdentityParams

    def label_settings(self, cfg, context):
        return {"threshold": cfg.labels.threshold}, False

    def relation_labels(self, image, cams, keys, threshold):
        fg = cams.max(axis=0) > threshold
        return np.where(fg, keys[cams.argmax(axis=0)], 0).astype(np.uint8)

    def network_spec(self, cfg, context):
        return {}

    def build_network(self, spec, pretrained):
        return _Scale()

    def walk_settings(self, cfg, context):
        return {"threshold": context.cam_threshold()}, True

    def walk(self, network, image, cams, keys, device, threshold):
        scores = np.concatenate([np.full((1,) + cams.shape[1:], threshold, np.float32), cams])
        return np.concatenate([[0], keys]).astype(np.uint8)[scores.argmax(0)], scores


@pytest.fixture
def identity_method():
    register_propagation("identity")(IdentityWalk)
    yield "identity"
    unregister_propagation("identity")


def test_a_third_method_runs_through_the_generic_stages(identity_method, tmp_path):
    from stages import cam, crf, data, eval_cam, eval_walk, prop_labels, synthetic, train_cls, train_prop, walk

    params = load_params(REPO / "params.yaml", [
        f"paths.outputs={tmp_path / 'out'}", f"synthetic.root={tmp_path / 'syn'}", f"data.root={tmp_path / 'syn'}",
        "synthetic.num_train=3", "synthetic.num_val=1", "synthetic.image_size=48", "workers=1",
        "backbone.name=tiny", "backbone.pretrained=none", "backbone.output_stride=8",
        "train_cls.epochs=1", "train_cls.batch_size=2", "train_cls.crop_size=48", "cam.scales=[1.0]",
        "propagation.identity.labels.threshold=0.3", "propagation.identity.train.epochs=1",
        "propagation.identity.train.batch_size=2", "propagation.identity.train.crop_size=48",
        "crf.source=identity", "crf.use_crf=false",
    ])
    assert params.propagation["identity"].labels.threshold == 0.3
    for stage in (synthetic, data, train_cls, cam, eval_cam):
        stage.run(params)
    assert prop_labels.run(params, "identity") == 3
    assert "loss" in train_prop.run(params, "identity")
    assert walk.run(params, "identity") == 3
    out = tmp_path / "out"
    assert len(list((out / "walk" / "identity" / "cam").glob("*.npz"))) == 3
    metrics = eval_walk.run(params, "identity")
    assert metrics["protocol"] == "identity" and 0 <= metrics["miou"] <= 1
    assert crf.run(params) == 3
    with pytest.raises(ConfigError, match="propagation.identity.labels.threshold"):
        load_params(REPO / "params.yaml", ["propagation.identity.labels.threshold=x"])


def test_unknown_propagation_section_and_source_are_errors():
    with pytest.raises(ConfigError, match="propagation.nope: unknown propagation method"):
        load_params(REPO / "params.yaml", ["propagation.nope.walk.beta=1"])
    with pytest.raises(ConfigError, match="crf.source"):  # the old name of AffinityNet's walk
        load_params(REPO / "params.yaml", ["crf.source=rw"])
    with pytest.raises(ConfigError, match="propagation.irn.walk.bg_threshold"):
        load_params(REPO / "params.yaml", ["propagation.irn.walk.bg_threshold=2"])


def test_cli_takes_the_method_by_name_and_refuses_an_unknown_one():
    from typer.testing import CliRunner

    from stages.cli import app

    result = CliRunner().invoke(app, ["walk", "nope"])
    assert result.exit_code == 2 and "unknown propagation method 'nope'" in result.output
    assert "affinitynet, irn" in result.output
    result = CliRunner().invoke(app, ["walk", "--help"])
    assert result.exit_code == 0 and "affinitynet, irn" in result.output
