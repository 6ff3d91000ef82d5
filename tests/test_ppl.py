"""PPL: patch split, aggregation, gradient to every patch, progressive schedule, short training runs."""
from __future__ import annotations

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.methods import build_method
from pipeline.methods.ppl import PPL, aggregate_patch_logits, patch_index, patch_pool
from pipeline.models.backbones.tiny import TinyBackbone

from conftest import coloured_squares


def test_patch_index_is_an_exact_partition():
    for size, k in [(8, 2), (7, 3), (28, 4), (5, 5)]:
        index = patch_index(size, k)
        counts = torch.bincount(index, minlength=k)
        assert counts.sum() == size and (counts > 0).all() and counts.max() - counts.min() <= 1
        assert (index[1:] >= index[:-1]).all()  # contiguous patches


def test_patch_pool_shapes_and_values():
    features = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    pooled = patch_pool(features, 2)
    assert pooled.shape == (2, 3, 2, 2)
    torch.testing.assert_close(pooled[:, :, 0, 1], features[:, :, :2, 3:].mean(dim=(2, 3)))
    torch.testing.assert_close(pooled[:, :, 1, 0], features[:, :, 2:, :3].mean(dim=(2, 3)))
    torch.testing.assert_close(patch_pool(features, 1)[..., 0, 0], features.mean(dim=(2, 3)))
    uneven = patch_pool(torch.rand(1, 2, 7, 5), 3)
    assert uneven.shape == (1, 2, 3, 3)
    with pytest.raises(ConfigError, match="ppl.granularities"):
        patch_pool(features, 5)


def test_aggregation_known_answers():
    logits = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])  # (1, 1, 2, 2)
    assert aggregate_patch_logits(logits, "max").item() == pytest.approx(6.0)
    assert aggregate_patch_logits(logits, "mean").item() == pytest.approx(3.0)
    lse = aggregate_patch_logits(logits, "lse", 1.0).item()
    assert 3.0 < lse < 6.0
    assert lse == pytest.approx(torch.log(torch.exp(logits).mean()).item())
    assert aggregate_patch_logits(logits, "lse", 50.0).item() == pytest.approx(6.0, abs=0.05)
    assert aggregate_patch_logits(logits, "lse", 1e-4).item() == pytest.approx(3.0, abs=1e-2)
    single = torch.tensor([[[[2.5]]], [[[-1.0]]]])
    torch.testing.assert_close(aggregate_patch_logits(single, "lse", 3.0), single.view(2, 1))
    with pytest.raises(ConfigError, match="ppl.aggregation"):
        aggregate_patch_logits(logits, "median")


@pytest.mark.parametrize("aggregation", ["lse", "mean"])
def test_every_patch_receives_gradient(aggregation):
    torch.manual_seed(0)
    method = PPL(TinyBackbone(), 3, granularities=[4], aggregation=aggregation)
    features = torch.randn(2, method.backbone.out_channels, 8, 8, requires_grad=True)
    patch_logits = method.patch_logits(features, method.classifier, 4)
    assert patch_logits.shape == (2, 3, 4, 4)
    image_logits = aggregate_patch_logits(patch_logits, aggregation, method.lse_r)
    assert image_logits.shape == (2, 3)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    torch.nn.functional.multilabel_soft_margin_loss(image_logits, labels).backward()
    per_patch = features.grad.abs().sum(dim=1).view(2, 4, 2, 4, 2).sum(dim=(2, 4))  # (B, 4, 4)
    assert (per_patch > 0).all()


def test_progressive_schedule_spreads_granularities_over_epochs():
    method = PPL(TinyBackbone(), 3, granularities=[1, 2, 4])
    seen = []
    for epoch in range(6):
        method.set_progress(epoch, 6)
        seen.append(method.current)
    assert seen == [1, 1, 2, 2, 4, 4]
    method.set_progress(0, 2)
    assert method.current == 1
    method.set_progress(1, 2)
    assert method.current == 2  # fewer epochs than stages: the last stage is skipped, none repeated


def test_bad_options_raise_config_error():
    with pytest.raises(ConfigError, match="ppl.granularities"):
        PPL(TinyBackbone(), 3, granularities=[0, 2])
    with pytest.raises(ConfigError, match="ppl.aux_stage"):
        PPL(TinyBackbone(), 3, aux_stage=-1)
    with pytest.raises(ConfigError, match="ppl.aggregation"):
        PPL(TinyBackbone(), 3, aggregation="median")


def test_cam_is_the_classifier_on_the_full_map():
    torch.manual_seed(0)
    method = build_method("ppl", TinyBackbone(), 3).eval()
    images = torch.rand(2, 3, 64, 64)
    cams = method.cam(images)
    assert cams.shape == (2, 3, 4, 4)
    method.set_progress(2, 3)  # granularity does not change the read-out
    torch.testing.assert_close(method.cam(images), cams)


def _train(method: PPL, steps: int = 25) -> list[float]:
    images, labels = coloured_squares()
    optimizer = torch.optim.SGD(method.param_groups(0.01), momentum=0.9)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        out = method.training_step(images, labels)
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    return losses


def test_short_training_reduces_loss_at_patch_granularity():
    torch.manual_seed(0)
    method = PPL(TinyBackbone(), 3, granularities=[1, 2, 4])
    method.set_progress(1, 3)
    assert method.current == 2
    losses = _train(method)
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3])


def test_short_training_reduces_loss_with_fusion_and_aux_level():
    torch.manual_seed(0)
    method = PPL(TinyBackbone(), 3, granularities=[1, 2], aux_stage=-2, fusion=True, fusion_dim=32)
    out = method.training_step(*coloured_squares())
    assert set(out) == {"loss", "patch", "fused", "aux"}
    assert method.cam(torch.rand(1, 3, 64, 64)).shape == (1, 3, 4, 4)
    losses = _train(method)
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3])
