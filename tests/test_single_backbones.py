"""The transformer backbones DFR uses (torchvision Swin-T, ViT-B/16): stage shapes at any input size,
position-embedding interpolation, and the offline error of their ImageNet weights."""
from urllib.error import URLError

import pytest
import torch

import pipeline.models.backbones.resnet as resnet_module
from pipeline.errors import ConfigError
from pipeline.models.backbones import build_backbone
from pipeline.segmentation.single_stage import SingleStageModel


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return build_backbone("vit_b_16", 16, "none").eval()


@pytest.mark.parametrize("output_stride, last", [(32, (2, 3)), (16, (4, 6))])
def test_swin_stages(output_stride, last):
    torch.manual_seed(0)
    model = build_backbone("swin_t", output_stride, "none").eval()
    with torch.no_grad():
        features = model(torch.rand(1, 3, 64, 96))
    assert [f.shape[1] for f in features] == [96, 192, 384, 768] == list(model.stage_channels)
    assert [tuple(f.shape[-2:]) for f in features] == [(16, 24), (8, 12), (4, 6), last]
    assert model.stage_strides[-1] == model.output_stride == output_stride


def test_vit_maps_any_input_size_on_the_stride_16_grid(vit):
    with torch.no_grad():
        features = vit(torch.rand(2, 3, 50, 70))      # resized to 48 x 64
    assert len(features) == 4 and all(f.shape == (2, 768, 3, 4) for f in features)
    assert vit.stage_strides == (16, 16, 16, 16)
    # at the pre-training grid the position embeddings are used unchanged
    torch.testing.assert_close(vit.position_embedding((14, 14)), vit.pos_embedding)
    assert vit.position_embedding((3, 4)).shape == (1, 13, 768)


def test_single_stage_model_on_swin():
    torch.manual_seed(0)
    model = SingleStageModel(build_backbone("swin_t", 16, "none"), 3, embed_dim=8).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("name", ["swin_t", "vit_b_16"])
def test_imagenet_weights_offline_is_a_config_error(monkeypatch, name):
    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(resnet_module, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError, match=rf"backbone\.pretrained: cannot download the imagenet weights of {name}"
                                          r".*local weights file path") as info:
        build_backbone(name, 16, "imagenet")
    assert "\n" not in str(info.value)


def test_unsupported_strides_are_config_errors():
    with pytest.raises(ConfigError, match="vit_b_16 supports 16"):
        build_backbone("vit_b_16", 8, "none")
    with pytest.raises(ConfigError, match="swin_t supports 16, 32"):
        build_backbone("swin_t", 8, "none")
