"""DeepLab v2 / v3 heads over the tiny backbone."""
import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError
from pipeline.models.backbones.tiny import TinyBackbone
from pipeline.segmentation.deeplab import ASPPv2, ASPPv3, AtrousConv2d, aspp_rates, build_deeplab


@pytest.mark.parametrize("head", ["v2", "v3"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_logits_at_input_size(head, output_stride):
    torch.manual_seed(0)
    model = build_deeplab(TinyBackbone(output_stride=output_stride), num_classes=5, head=head)
    images = torch.rand(2, 3, 50, 66)
    logits = model(images)
    assert logits.shape == (2, 5, 50, 66)
    features = model.backbone(images)[-1]
    assert model.head(features).shape[-2:] == features.shape[-2:]
    model.eval()
    with torch.no_grad():
        assert model(images[:1]).shape == (1, 5, 50, 66)


def test_rates_follow_the_papers():
    assert aspp_rates("v3", 16) == (6, 12, 18)
    assert aspp_rates("v3", 8) == (12, 24, 36)
    assert aspp_rates("v2", 8) == (6, 12, 18, 24)
    assert aspp_rates("v2", 16) == (3, 6, 9, 12)
    v3 = build_deeplab(TinyBackbone(output_stride=8), 3, "v3").head
    assert isinstance(v3, ASPPv3)
    assert [b[0].dilation[0] for b in v3.branches[1:4]] == [12, 24, 36]
    assert len(v3.branches) == 5  # 1x1 + three atrous + image pooling
    v2 = build_deeplab(TinyBackbone(output_stride=8), 3, "v2").head
    assert isinstance(v2, ASPPv2) and [c.dilation[0] for c in v2.branches] == [6, 12, 18, 24]


@pytest.mark.parametrize("size", [(12, 12), (12, 40), (40, 12), (40, 40), (5, 7)])
@pytest.mark.parametrize("rate", [6, 12, 36])
def test_atrous_conv_skipping_dead_taps_equals_the_full_convolution(size, rate):
    """Rates at or past the map's height / width leave out the taps that read only padding: same output and
    the same gradients (zero for those taps) as the full 3x3 atrous convolution."""
    torch.manual_seed(0)
    conv = AtrousConv2d(4, 3, rate)
    x = torch.randn(2, 4, *size, requires_grad=True)
    full = F.conv2d(x, conv.weight, conv.bias, padding=rate, dilation=rate)
    out = conv(x)
    torch.testing.assert_close(out, full)
    grad = torch.randn_like(out)
    for ours, reference in zip(torch.autograd.grad(out, (x, conv.weight, conv.bias), grad),
                               torch.autograd.grad(full, (x, conv.weight, conv.bias), grad)):
        torch.testing.assert_close(ours, reference)
    assert isinstance(conv, torch.nn.Conv2d) and conv.weight.shape == (3, 4, 3, 3)  # checkpoints unchanged


def test_v2_sums_branch_scores():
    head = ASPPv2(8, 3, (1, 2))
    x = torch.rand(1, 8, 9, 9)
    torch.testing.assert_close(head(x), head.branches[0](x) + head.branches[1](x))


def test_param_groups_split_backbone_and_head():
    model = build_deeplab(TinyBackbone(), 4, "v3")
    groups = model.param_groups(0.01, head_lr_mult=10)
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.1)]
    counted = sum(p.numel() for g in groups for p in g["params"])
    assert counted == sum(p.numel() for p in model.parameters())
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert all(id(p) in backbone_ids for p in groups[0]["params"])
    assert not any(id(p) in backbone_ids for p in groups[1]["params"])


def test_bad_configuration_raises():
    with pytest.raises(ConfigError, match="^head: must be one of"):
        build_deeplab(TinyBackbone(), 4, "v4")
    with pytest.raises(ConfigError, match="num_classes"):
        build_deeplab(TinyBackbone(), 1)
    model = build_deeplab(TinyBackbone(), 4, "v3").train()
    with pytest.raises(ConfigError, match="batch_size"):
        model(torch.rand(1, 3, 32, 32))
