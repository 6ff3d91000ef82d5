"""PPL: feature-map patches run through the remaining stages independently, padding, aggregation,
progressive schedule, short training runs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.cam.methods import build_method
from pipeline.cam.methods.ppl import (
    PPL,
    aggregate_patch_logits,
    merge_patches,
    pad_for_patches,
    split_patches,
    stage_epochs,
)
from pipeline.errors import ConfigError
from pipeline.models.backbones.tiny import TinyBackbone

from conftest import coloured_squares


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_split_and_merge_patches_fold_the_grid_into_the_batch():
    features = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    patches = split_patches(features, 2)
    assert patches.shape == (8, 3, 2, 3)
    torch.testing.assert_close(patches[1], features[0, :, :2, 3:])  # image 0, patch (0, 1)
    torch.testing.assert_close(patches[6], features[1, :, 2:, :3])  # image 1, patch (1, 0)
    torch.testing.assert_close(merge_patches(patches, 2), features)
    with pytest.raises(ValueError, match="pad it first"):
        split_patches(features, 3)


def test_pad_for_patches_pads_bottom_right_and_marks_real_cells():
    features = torch.rand(1, 2, 7, 5)
    padded, mask = pad_for_patches(features, 3)
    assert padded.shape == (1, 2, 9, 6) and mask.shape == (1, 1, 9, 6)
    torch.testing.assert_close(padded[..., :7, :5], features)
    assert padded[..., 7:, :].abs().sum() == 0 and padded[..., :, 5:].abs().sum() == 0
    assert mask.sum() == 35 and mask[..., :7, :5].all()
    assert pad_for_patches(features, 1)[0] is features
    with pytest.raises(ConfigError, match="granularities: granularity 6 does not fit a 7x5"):
        pad_for_patches(features, 6)


def _patch_logits(method: PPL, state: torch.Tensor, k: int, level: int) -> torch.Tensor:
    return method.patch_logits(method.run_patches(state, k, level), method.classifier)


def test_patches_have_independent_receptive_fields():
    torch.manual_seed(0)
    method = PPL(TinyBackbone(), 3, split_stages=[1]).eval()
    with torch.no_grad():
        _, state = method.backbone.forward_until(torch.rand(1, 3, 64, 64), 1)  # (1, 32, 16, 16)
        before = _patch_logits(method, state, 4, 1)
        perturbed = state.clone()
        perturbed[..., 5, 6] += 5.0  # one cell of patch (1, 1)
        after = _patch_logits(method, perturbed, 4, 1)
        changed = (after - before).abs().amax(dim=1)[0]  # (4, 4)
        assert changed[1, 1] > 1e-3
        changed[1, 1] = 0
        assert changed.max() == 0
        # control: the unsplit remaining stages carry the same perturbation into other patches' regions
        whole = method.classifier(method.backbone.forward_from(state, 1)[-1])
        whole_perturbed = method.classifier(method.backbone.forward_from(perturbed, 1)[-1])
        spread = (whole_perturbed - whole).abs().amax(dim=1)[0] > 1e-6  # (4, 4) output cells
        assert spread.sum() > 1


def test_an_image_pixel_inside_a_patch_changes_only_that_patch():
    torch.manual_seed(0)
    method = PPL(TinyBackbone(), 3, split_stages=[1]).eval()
    images = torch.rand(1, 3, 128, 128)  # level 1: 32x32, 2x2 patches of 16x16 cells (64x64 pixels)
    moved = images.clone()
    moved[0, :, 96, 32] = 1.0 - moved[0, :, 96, 32]  # the middle of patch (1, 0)
    with torch.no_grad():
        scores = [_patch_logits(method, method.backbone.forward_until(x, 1)[1], 2, 1) for x in (images, moved)]
    changed = (scores[1] - scores[0]).abs().amax(dim=1)[0]
    assert changed[1, 0] > 0 and changed[0, 0] == changed[0, 1] == changed[1, 1] == 0


def test_padded_patches_pool_only_their_real_cells():
    torch.manual_seed(0)
    method = PPL(TinyBackbone(), 3, split_stages=[2]).eval()
    with torch.no_grad():
        _, state = method.backbone.forward_until(torch.rand(2, 3, 104, 104), 2)  # (2, 64, 13, 13)
        out = method.run_patches(state, 4, 2)  # padded to 16x16: the last patch row/column has 1 real row
        assert out.features.shape == (2 * 16, 128, 2, 2) and out.valid.shape == (16, 1, 2, 2)
        valid = out.valid.view(4, 4, 2, 2)
        assert valid[:3, :3].all() and valid[3, 3].tolist() == [[True, False], [False, False]]
        assert valid[1, 3].tolist() == [[True, False], [True, False]]
        last = out.features.view(2, 4, 4, 128, 2, 2)[:, 1, 3]  # (2, D, 2, 2): only the left column is real
        got = out.pooled().view(2, 4, 4, 128)[:, 1, 3]
        torch.testing.assert_close(got, last[..., 0].mean(dim=-1))
        assert out.stitched(out.features).shape == (2, 128, 7, 7)


def test_granularity_one_is_plain_cam_on_the_whole_image():
    torch.manual_seed(0)
    method = PPL(TinyBackbone(), 3, granularities=[1])
    images, labels = coloured_squares()
    loss = method.training_step(images, labels)["patch"]
    logits = method.classifier(method.backbone(images)[-1]).mean(dim=(2, 3))
    torch.testing.assert_close(loss, F.multilabel_soft_margin_loss(logits, labels))


def test_aggregation_known_answers():
    logits = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])  # (1, 1, 2, 2)
    assert aggregate_patch_logits(logits, "max").item() == pytest.approx(6.0)
    assert aggregate_patch_logits(logits, "mean").item() == pytest.approx(3.0)
    lse = aggregate_patch_logits(logits, "lse", 1.0).item()
    assert lse == pytest.approx(torch.log(torch.exp(logits).mean()).item())
    assert aggregate_patch_logits(logits, "lse", 50.0).item() == pytest.approx(6.0, abs=0.05)
    assert aggregate_patch_logits(logits, "lse", 1e-4).item() == pytest.approx(3.0, abs=1e-2)
    with pytest.raises(ConfigError, match="aggregation"):
        aggregate_patch_logits(logits, "median")


@pytest.mark.parametrize("aggregation", ["lse", "mean"])
def test_every_patch_trains_the_shared_stages(aggregation):
    torch.manual_seed(0)
    method = PPL(TinyBackbone(), 3, granularities=[4], split_stages=[1], aggregation=aggregation)
    state = torch.randn(2, 32, 16, 16, requires_grad=True)
    patch_logits = _patch_logits(method, state, 4, 1)
    assert patch_logits.shape == (2, 3, 4, 4)
    image_logits = aggregate_patch_logits(patch_logits, aggregation, method.lse_r)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    F.multilabel_soft_margin_loss(image_logits, labels).backward()
    per_patch = state.grad.abs().sum(dim=1).view(2, 4, 4, 4, 4).sum(dim=(2, 4))  # (B, 4, 4)
    assert (per_patch > 0).all()


def test_progressive_schedule_spreads_granularities_over_epochs():
    assert stage_epochs(3, 6) == [range(0, 2), range(2, 4), range(4, 6)]
    assert stage_epochs(3, 2) == [range(0, 1), range(1, 2), range(2, 2)]
    method = PPL(TinyBackbone(), 3, granularities=[1, 2, 4])
    seen = []
    for epoch in range(6):
        method.set_progress(epoch, 6)
        seen.append(method.current)
    assert seen == [1, 1, 2, 2, 4, 4]
    assert method.stage_span(3, 6) == range(2, 4)
    method.set_progress(1, 2)
    assert method.current == 2  # fewer epochs than stages: the last stage is skipped, none repeated
    with pytest.raises(ConfigError, match="num_epochs"):
        method.set_progress(0, 0)


def test_bad_options_raise_config_error():
    with pytest.raises(ConfigError, match="granularities"):
        PPL(TinyBackbone(), 3, granularities=[0, 2])
    with pytest.raises(ConfigError, match="split_stages"):
        PPL(TinyBackbone(), 3, split_stages=[-1])
    with pytest.raises(ConfigError, match="split_stages"):
        PPL(TinyBackbone(), 3, split_stages=[4])
    with pytest.raises(ConfigError, match="split_stages: fusion takes one"):
        PPL(TinyBackbone(), 3, split_stages=[1, 2], fusion=True)
    with pytest.raises(ConfigError, match="aggregation"):
        PPL(TinyBackbone(), 3, aggregation="median")
    with pytest.raises(ConfigError, match="granularities: granularity 32 does not fit"):
        PPL(TinyBackbone(), 3, granularities=[32]).training_step(*coloured_squares())


def test_cam_is_the_classifier_on_the_unsplit_map():
    torch.manual_seed(0)
    method = build_method("ppl", TinyBackbone(), 3).eval()
    images = torch.rand(2, 3, 64, 64)
    cams = method.cam(images)
    assert cams.shape == (2, 3, 4, 4)
    torch.testing.assert_close(cams, method.classifier(method.backbone(images)[-1]))
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
    method = PPL(TinyBackbone(), 3, granularities=[1, 2, 4], split_stages=[-2, -3])
    method.set_progress(1, 3)
    assert method.current == 2
    losses = _train(method)
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3])


def test_short_training_reduces_loss_with_fusion():
    torch.manual_seed(0)
    method = PPL(TinyBackbone(), 3, granularities=[1, 2, 4], fusion=True, fusion_dim=32)
    out = method.training_step(*coloured_squares())
    assert set(out) == {"loss", "patch", "fused"}
    assert method.cam(torch.rand(1, 3, 64, 64)).shape == (1, 3, 4, 4)
    losses = _train(method)
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3])
