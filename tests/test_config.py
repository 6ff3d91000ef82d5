from pathlib import Path

import pytest

from pipeline.cam.methods import METHODS
from pipeline.errors import ConfigError
from stages.config import load_params, parse_override

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_validate():
    params = load_params(REPO / "params.yaml")
    assert params.method in METHODS
    for name in METHODS:
        params.method_options(name)


def test_override_is_applied_and_typed(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("train_cls:\n  epochs: 3\n")
    params = load_params(path, ["train_cls.epochs=5", "cam.scales=[1.0, 0.5]", "backbone.pretrained=none"])
    assert params.train_cls.epochs == 5
    assert params.cam.scales == [1.0, 0.5]


@pytest.mark.parametrize(
    "override, key",
    [
        ("train_cls.epochs=0", "train_cls.epochs"),
        ("train_cls.lr=abc", "train_cls.lr"),
        ("train_cls.nope=1", "train_cls.nope"),
        ("backbone.output_stride=12", "backbone.output_stride"),
        ("method=gradcam", "method"),
        ("device=tpu", "device"),
        ("eval_cam.threshold_min=0.99", "eval_cam"),
        ("methods.cam.unknown=1", "methods.cam.unknown"),
        ("backbone.name=resnet18", "backbone.name: unknown backbone 'resnet18'"),
        ("methods.ppl.aux_stage=abc", "methods.ppl.aux_stage"),
        ("methods.seam.scale=true", "methods.seam.scale"),
        ("methods.seem.scale=0.5", "methods.seem: unknown method"),
    ],
)
def test_bad_values_name_the_key(tmp_path, override, key):
    path = tmp_path / "p.yaml"
    path.write_text("seed: 0\n")
    with pytest.raises(ConfigError) as info:
        load_params(path, [override])
    message = str(info.value)
    assert key in message and "\n" not in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_parse_override_requires_equals():
    assert parse_override("a.b=3") == ("a.b", 3)
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("a.b")


def test_method_floats_in_exponent_notation_are_floats(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("seed: 0\n")
    params = load_params(path, ["methods.seam.scale=3e-1", "train_cls.lr=1e-3"])
    assert params.method_options("seam")["scale"] == pytest.approx(0.3)
    assert params.train_cls.lr == pytest.approx(1e-3)


def test_single_kernel_width_auto_is_rloss_relative_to_the_crop():
    params = load_params(REPO / "params.yaml", ["single.sigma_xy=auto", "single.crop_size=513"])
    assert params.single.kernel_sigma_xy() == pytest.approx(100.0)  # rloss: 100 px at its 513 crops
    params = load_params(REPO / "params.yaml", ["single.sigma_xy=auto", "single.crop_size=160"])
    assert params.single.kernel_sigma_xy() == pytest.approx(100.0 * 160 / 513)
    assert load_params(REPO / "params.yaml", ["single.sigma_xy=40"]).single.kernel_sigma_xy() == 40.0
    with pytest.raises(ConfigError, match="single.sigma_xy"):
        load_params(REPO / "params.yaml", ["single.sigma_xy=0"])


def test_single_warmup_auto_waits_for_the_cam_head_only_with_image_labels():
    image = load_params(REPO / "params.yaml", ["single.supervision=image", "single.steps=300"]).single
    scribble = load_params(REPO / "params.yaml", ["single.supervision=scribble", "single.steps=300"]).single
    assert (image.warmup(), scribble.warmup()) == (100, 0)
    assert load_params(REPO / "params.yaml", ["single.warmup_steps=12"]).single.warmup() == 12
    with pytest.raises(ConfigError, match="single.warmup_steps"):
        load_params(REPO / "params.yaml", ["single.warmup_steps=-1"])


def test_deeplab_backbone_bn_auto_freezes_only_pretrained_backbones():
    cfg = load_params(REPO / "params.yaml").train_seg
    assert cfg.freeze_backbone_bn == "auto"
    assert cfg.freezes_backbone_bn("imagenet") and not cfg.freezes_backbone_bn("none")
    assert not cfg.freezes_backbone_bn(None)
    fixed = load_params(REPO / "params.yaml", ["train_seg.freeze_backbone_bn=false"]).train_seg
    assert not fixed.freezes_backbone_bn("imagenet")
    with pytest.raises(ConfigError, match="train_seg.freeze_backbone_bn"):
        load_params(REPO / "params.yaml", ["train_seg.freeze_backbone_bn=sometimes"])


def test_deeplab_lr_auto_follows_the_backbone_bn_rule():
    demo = load_params(REPO / "params.yaml")  # data.root is the generated data: batch norms train
    cfg = demo.train_seg
    assert cfg.lr == "auto" and not cfg.freezes_backbone_bn("imagenet", demo.uses_generated_data())
    assert cfg.learning_rate(False) == pytest.approx(1e-2) and cfg.learning_rate(True) == pytest.approx(1e-3)
    photos = load_params(REPO / "params.yaml", ["data.root=/data/msrc_objects", "backbone.name=efficientnet_lite0",
                                                "backbone.pretrained=imagenet"])
    frozen = photos.train_seg.freezes_backbone_bn(photos.backbone.pretrained, photos.uses_generated_data())
    assert frozen and photos.train_seg.learning_rate(frozen) == pytest.approx(1e-3)  # SEAM's, as before
    fixed = load_params(REPO / "params.yaml", ["train_seg.lr=0.003"]).train_seg
    assert fixed.learning_rate(True) == fixed.learning_rate(False) == pytest.approx(0.003)
    with pytest.raises(ConfigError, match="train_seg.lr"):
        load_params(REPO / "params.yaml", ["train_seg.lr=-0.1"])
