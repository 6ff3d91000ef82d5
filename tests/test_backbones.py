"""Backbones: pretrained EfficientNet-Lite on real photos, strides / dilation, ResNet and ResNet-38 loading."""
from __future__ import annotations

import math
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import ResNet50_Weights, resnet50

from pipeline.data.image_files import load_image
from pipeline.errors import ConfigError
from pipeline.models.backbones import BACKBONES, build_backbone
from pipeline.models.backbones import resnet as resnet_module
from pipeline.models.backbones.efficientnet_lite import (
    Conv2dSame,
    EfficientNetLite,
    EfficientNetLiteBackbone,
    pretrained_weights_path,
)
from pipeline.models.backbones.resnet import load_state_dict_strict
from pipeline.models.backbones.resnet38 import ResNet38Backbone

FIXTURES = Path(__file__).parent / "fixtures"
IMAGENET_CATEGORIES = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]

# MSRC photos (tests/fixtures, copied from msrc_objects/JPEGImages) -> acceptable ImageNet-1k classes
PHOTOS = {
    "msrc_15_5_s_cat.jpg": {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"},
    "msrc_1_22_s_cow.jpg": {"ox", "water buffalo", "bison"},
    "msrc_4_17_s_aeroplane.jpg": {"airliner", "warplane", "wing"},
    "msrc_7_10_s_car.jpg": {"beach wagon", "cab", "minivan", "sports car", "convertible", "pickup", "racer"},
    "msrc_8_30_s_bicycle.jpg": {"mountain bike", "bicycle-built-for-two"},
}


def _photo(name: str) -> torch.Tensor:
    return torch.from_numpy(load_image(FIXTURES / name)).permute(2, 0, 1)[None].float() / 255.0


def _top5(model: EfficientNetLiteBackbone, images: torch.Tensor) -> list[list[str]]:
    logits = model.classify(images)
    return [[IMAGENET_CATEGORIES[i] for i in row] for row in logits.topk(5, dim=1).indices.tolist()]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # these are tiny forward passes: OpenMP thread start-up and spinning on a shared 2-core machine cost more
    # than the convolutions themselves
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- EfficientNet-Lite -------------------------------------------------------------------------------------


def test_category_names_match_the_documented_indices():
    assert [IMAGENET_CATEGORIES[i] for i in (281, 285, 345, 404, 671, 817, 895)] == [
        "tabby", "Egyptian cat", "ox", "airliner", "mountain bike", "sports car", "warplane"]


@pytest.mark.parametrize("variant, num_blocks", [("efficientnet_lite0", 16), ("efficientnet_lite2", 21)])
def test_packaged_imagenet_weights_load_strictly(variant, num_blocks):
    state = torch.load(pretrained_weights_path(variant), map_location="cpu", weights_only=True)
    model = EfficientNetLite(variant)
    model.load_state_dict(state, strict=True)  # raises on any missing/unexpected key or shape mismatch
    assert len(model._blocks) == num_blocks
    assert model._conv_stem.out_channels == 32 and model._conv_head.out_channels == 1280
    bn = model._blocks[3]._bn1
    assert bn.eps == pytest.approx(1e-3) and bn.momentum == pytest.approx(0.01)


def test_pretrained_lite0_recognises_real_photos():
    model = EfficientNetLiteBackbone("efficientnet_lite0", 32, "imagenet", keep_classifier=True).eval()
    names = sorted(PHOTOS)
    predictions = _top5(model, torch.cat([_photo(name) for name in names]))  # all MSRC photos are 213 x 320
    for name, top5 in zip(names, predictions):
        assert top5[0] in PHOTOS[name], (name, top5)


def test_dilated_lite0_keeps_its_imagenet_prediction():
    # dilation instead of stride changes the sampling grid only: a correct port still recognises the cat
    model = EfficientNetLiteBackbone("efficientnet_lite0", 8, "imagenet", keep_classifier=True).eval()
    assert _top5(model, _photo("msrc_15_5_s_cat.jpg"))[0][0] in PHOTOS["msrc_15_5_s_cat.jpg"]


def test_pretrained_lite2_recognises_a_bicycle():
    model = EfficientNetLiteBackbone("efficientnet_lite2", 32, "imagenet", keep_classifier=True).eval()
    assert _top5(model, _photo("msrc_8_30_s_bicycle.jpg"))[0][0] == "mountain bike"


def test_cam_backbone_drops_the_imagenet_classifier():
    model = build_backbone("efficientnet_lite0", 16, "imagenet")
    assert not any(name.startswith("net._fc") for name, _ in model.named_parameters())
    with pytest.raises(ConfigError, match="keep_classifier"):
        model.classify(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("variant, output_stride", [("efficientnet_lite0", 8), ("efficientnet_lite0", 16),
                                                    ("efficientnet_lite0", 32), ("efficientnet_lite2", 8)])
def test_lite_stage_shapes_follow_tf_same_padding(variant, output_stride):
    model = build_backbone(variant, output_stride).eval()
    height, width = 45, 70  # odd sizes: TF "SAME" gives ceil(size / stride)
    with torch.no_grad():
        features = model(torch.rand(2, 3, height, width))
    assert model.stage_strides == (4, 8, min(16, output_stride), output_stride)
    assert features[-1].shape[1] == 1280 == model.out_channels
    for feat, channels, stride in zip(features, model.stage_channels, model.stage_strides):
        assert feat.shape == (2, channels, math.ceil(height / stride), math.ceil(width / stride))


def test_dilation_keeps_spatial_size_and_weights():
    torch.manual_seed(0)
    native, dilated = build_backbone("efficientnet_lite0", 32), build_backbone("efficientnet_lite0", 8)
    dilated.load_state_dict(native.state_dict())  # same parameters, only strides/dilations differ
    deep = dilated.net._blocks[-1]._depthwise_conv
    assert deep.stride == (1, 1) and deep.dilation == (4, 4)
    with torch.no_grad():
        out = dilated.eval()(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in out] == [(16, 24), (8, 12), (8, 12), (8, 12)]


def test_same_padding_conv_matches_explicit_padding():
    torch.manual_seed(0)
    x = torch.rand(1, 4, 13, 10)
    strided = Conv2dSame(4, 4, 3, stride=2, bias=False)
    # TF SAME: total pad = (ceil(n/2)-1)*2 + 3 - n -> 13: 2 (1 top, 1 bottom); 10: 1 (0 left, 1 right)
    expected = F.conv2d(F.pad(x, (0, 1, 1, 1)), strided.weight, stride=2)
    assert torch.allclose(strided(x), expected, atol=1e-6)
    dilated = Conv2dSame(4, 4, 5, dilation=2, groups=4, bias=False)
    expected = F.conv2d(x, dilated.weight, padding=4, dilation=2, groups=4)
    assert torch.allclose(dilated(x), expected, atol=1e-6)


def test_lite_trains_end_to_end():
    model = build_backbone("efficientnet_lite0", 16).train()
    features = model(torch.rand(1, 3, 32, 32))
    features[-1].mean().backward()
    assert model.net._conv_stem.weight.grad is not None
    assert model.net._conv_stem.weight.grad.abs().sum() > 0


# --- ResNet-50/101 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, output_stride", [("resnet50", 8), ("resnet101", 16)])
def test_resnet_dilated_shapes(name, output_stride):
    model = build_backbone(name, output_stride, pretrained=None).eval()
    with torch.no_grad():
        features = model(torch.rand(1, 3, 32, 48))
    assert model.stage_channels == (256, 512, 1024, 2048)
    assert model.stage_strides == (4, 8, min(16, output_stride), output_stride)
    for feat, channels, stride in zip(features, model.stage_channels, model.stage_strides):
        assert feat.shape == (1, channels, 32 // stride, 48 // stride)


def test_resnet_imagenet_offline_is_a_config_error(monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(resnet_module, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError, match=r"backbone\.pretrained.*local weights file path") as info:
        build_backbone("resnet50", 16, "imagenet")
    assert "\n" not in str(info.value)


def test_resnet_loads_a_local_torchvision_state_dict(tmp_path):
    torch.manual_seed(0)
    reference = resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)  # torchvision layout, including fc.*
    model = build_backbone("resnet50", 8, str(path))
    assert torch.equal(model.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)
    assert torch.equal(model.stem[1].running_var, reference.bn1.running_var)


def test_resnet_weights_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match=r"backbone\.pretrained.*nope\.pth"):
        build_backbone("resnet101", 16, str(missing))
    wrong = tmp_path / "lite0_as_resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "extra.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ConfigError, match=r"lite0_as_resnet\.pth does not fit.*missing"):
        build_backbone("resnet50", 16, str(wrong))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"cannot read weights file .*garbage\.pth"):
        build_backbone("resnet50", 16, str(garbage))


# --- ResNet-38 ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet38() -> ResNet38Backbone:
    torch.manual_seed(0)
    return build_backbone("resnet38", 8).eval()


def test_resnet38_shapes_at_output_stride_8(resnet38):
    with torch.no_grad():
        features = resnet38(torch.rand(1, 3, 64, 64))
    assert resnet38.stage_channels == (256, 512, 1024, 4096)
    assert resnet38.stage_strides == (4, 8, 8, 8)
    assert [tuple(f.shape) for f in features] == [(1, 256, 16, 16), (1, 512, 8, 8), (1, 1024, 8, 8), (1, 4096, 8, 8)]
    assert all((f >= 0).all() for f in features)  # BN-ReLU taps of a pre-activation network
    assert resnet38.b7.conv_branch2b1.dilation == (4, 4) and resnet38.b5_1.conv_branch2a.dilation == (2, 2)


def test_resnet38_output_stride_16():
    model = build_backbone("resnet38", 16).eval()
    with torch.no_grad():
        features = model(torch.rand(1, 3, 32, 32))
    assert [tuple(f.shape[-2:]) for f in features] == [(8, 8), (4, 4), (2, 2), (2, 2)]


def test_resnet38_uses_the_converted_weight_names_and_loads_strictly(resnet38):
    state = resnet38.state_dict()
    for key in ("conv1a.weight", "b2_2.bn_branch2b1.running_mean", "b4_5.conv_branch2b1.weight",
                "b5.conv_branch1.weight", "b6.conv_branch2b2.weight", "b7.bn_branch2b2.weight", "bn7.running_var"):
        assert key in state
    assert state["b7.conv_branch2b1.weight"].shape == (2048, 1024, 3, 3)
    # converted files carry no num_batches_tracked counters: still a strict fit
    converted = {k: v.clone() + 1 for k, v in state.items() if not k.endswith("num_batches_tracked")}
    load_state_dict_strict(resnet38, converted, "converted.pth")
    assert torch.equal(resnet38.bn7.running_var, converted["bn7.running_var"])
    del converted["b3_1.conv_branch2a.weight"]
    with pytest.raises(ConfigError, match=r"converted\.pth does not fit.*b3_1\.conv_branch2a\.weight"):
        load_state_dict_strict(resnet38, converted, "converted.pth")


def test_resnet38_imagenet_asks_for_a_weights_file():
    with pytest.raises(ConfigError, match=r"backbone\.pretrained.*converted ResNet-38 weights file"):
        build_backbone("resnet38", 8, "imagenet")


# --- build_backbone ----------------------------------------------------------------------------------------


def test_build_backbone_names_and_errors():
    assert BACKBONES[0] == "tiny" and {"resnet38", "resnet50", "resnet101"} <= set(BACKBONES)  # the papers'
    tiny = build_backbone("tiny", 8, "none")
    assert tiny.output_stride == 8 and tiny.stage_strides[-1] == 8
    with pytest.raises(ConfigError, match=r"backbone\.name.*vgg16"):
        build_backbone("vgg16")
    with pytest.raises(ConfigError, match=r"backbone\.output_stride.*resnet38 supports 8, 16, got 32"):
        build_backbone("resnet38", 32)
    with pytest.raises(ConfigError, match=r"backbone\.output_stride"):
        build_backbone("efficientnet_lite0", 4)
    with pytest.raises(ConfigError, match=r"backbone\.pretrained"):
        build_backbone("tiny", 16, "imagenet")


def test_build_backbone_loads_a_local_lite_file(tmp_path):
    source = build_backbone("efficientnet_lite0", 16, "imagenet")
    path = tmp_path / "lite0.pth"
    state = torch.load(pretrained_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    torch.save(state, path)
    model = build_backbone("efficientnet_lite0", 16, path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
    assert np.isclose(float(model.net._bn1.running_var.mean()), float(state["_bn1.running_var"].mean()))


# --- Cutting the forward pass at a stage (PPL) -------------------------------------------------------------


def _check_until_from(model, images: torch.Tensor) -> None:
    with torch.no_grad():
        full = model(images)
        for level in range(model.num_stages):
            head, state = model.forward_until(images, level)
            tail = model.forward_from(state, level)
            assert len(head) == level + 1 and len(head) + len(tail) == len(full)
            for got, want in zip(head + tail, full):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        negative, _ = model.forward_until(images, -2)
        assert len(negative) == model.num_stages - 1
        with pytest.raises(ConfigError, match="level 4 out of range"):
            model.forward_until(images, model.num_stages)


@pytest.mark.parametrize(
    "name, output_stride", [("tiny", 16), ("tiny", 8), ("efficientnet_lite0", 16), ("efficientnet_lite0", 8),
                            ("resnet50", 16), ("resnet50", 8)]
)
def test_forward_until_then_from_equals_forward(name, output_stride):
    torch.manual_seed(0)
    _check_until_from(build_backbone(name, output_stride, "none").eval(), torch.rand(2, 3, 48, 64))


def test_resnet38_forward_until_then_from_equals_forward(resnet38):
    _check_until_from(resnet38, torch.rand(1, 3, 48, 64))


def test_forward_from_runs_on_a_patch_of_the_state():
    torch.manual_seed(0)
    model = build_backbone("tiny", 16, "none").eval()
    with torch.no_grad():
        _, state = model.forward_until(torch.rand(1, 3, 64, 64), 1)  # (1, 32, 16, 16)
        patch = model.forward_from(state[..., :8, 8:], 1)
    assert [tuple(f.shape) for f in patch] == [(1, 64, 4, 4), (1, 128, 2, 2)]


def test_resnet38_cut_does_not_update_the_next_blocks_running_stats():
    torch.manual_seed(0)
    model = ResNet38Backbone(output_stride=8).train()
    before = model.b4.bn_branch2a.running_mean.clone()
    with torch.no_grad():
        head, _ = model.forward_until(torch.rand(2, 3, 32, 32), 0)
    assert torch.equal(model.b4.bn_branch2a.running_mean, before)
    assert (head[0] >= 0).all()
