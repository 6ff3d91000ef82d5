"""SEAM: equivariant regularisation, PCM convexity, OHEM, and a short training run."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.cam.maps import correlation_seed, minmax_normalise
from pipeline.cam.methods import build_method
from pipeline.cam.methods.correlation import (
    CorrelationFeatures,
    PixelCorrelationModule,
    low_activation_loss,
    ohem_l1,
    pcm_propagate,
    pixel_affinity,
)
from pipeline.cam.methods.seam import SEAM, equivariant_l1, scaled_size
from pipeline.errors import ConfigError
from pipeline.models.backbones.tiny import TinyBackbone

from conftest import coloured_squares


def rescale(x: torch.Tensor, factor: float = 0.5) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def test_er_zero_for_equivariant_map_and_positive_otherwise():
    images = torch.rand(2, 3, 32, 32)

    def equivariant(x):  # per-pixel channel mean commutes with bilinear rescaling
        return x.mean(dim=1, keepdim=True)

    def not_equivariant(x):  # a fixed 3-pixel shift does not scale with the image
        return torch.roll(x.mean(dim=1, keepdim=True), shifts=3, dims=-1)

    assert equivariant_l1(rescale(equivariant(images)), equivariant(rescale(images))).item() < 1e-6
    assert equivariant_l1(rescale(not_equivariant(images)), not_equivariant(rescale(images))).item() > 1e-2


def test_pixel_affinity_rows_are_convex_weights():
    embedding = torch.randn(2, 8, 5, 6)
    affinity = pixel_affinity(embedding)
    assert affinity.shape == (2, 30, 30)
    assert (affinity >= 0).all()
    torch.testing.assert_close(affinity.sum(dim=-1), torch.ones(2, 30))


def test_pcm_output_is_convex_combination_of_inputs():
    torch.manual_seed(0)
    cams = torch.rand(2, 4, 7, 9) * 5 - 1
    embedding = torch.randn(2, 16, 7, 9)
    refined = pcm_propagate(cams, embedding, chunk_size=10)  # blocks of 10 query pixels
    dense = (cams.flatten(2) @ pixel_affinity(embedding).transpose(1, 2)).view_as(cams)
    torch.testing.assert_close(refined, dense)
    low = cams.amin(dim=(2, 3), keepdim=True)
    high = cams.amax(dim=(2, 3), keepdim=True)
    assert (refined >= low - 1e-5).all() and (refined <= high + 1e-5).all()


def test_pcm_identical_embeddings_average_the_cam():
    cams = torch.rand(1, 3, 4, 4)
    embedding = torch.ones(1, 5, 4, 4)  # every pixel equally similar to every other
    refined = pcm_propagate(cams, embedding)
    torch.testing.assert_close(refined, cams.mean(dim=(2, 3), keepdim=True).expand_as(cams))


def test_pcm_module_shapes():
    backbone = TinyBackbone()
    pcm = PixelCorrelationModule(backbone.stage_channels, (-3, -2), (8, 16), 12)
    images = torch.rand(2, 3, 64, 64)
    features = backbone(images)
    cams = torch.rand(2, 4, *features[-1].shape[-2:])
    assert pcm(cams, features, images).shape == cams.shape


def test_correlation_features_see_mid_level_stages_not_the_classifier_input():
    backbone = TinyBackbone()  # stages: w, 2w, 4w, 8w; the last feeds the classifier
    module = CorrelationFeatures(backbone.stage_channels)  # default (-3, -2)
    assert module.stages == (1, 2)
    assert [p.in_channels for p in module.stage_proj] == list(backbone.stage_channels[1:3])
    features = backbone(torch.rand(1, 3, 64, 64))
    image = torch.rand(1, 3, 64, 64)
    out = module(features, image)
    assert out.shape == (1, 3 + 64 + 128, *features[-1].shape[-2:])
    changed_last = features[:-1] + [torch.randn_like(features[-1])]
    torch.testing.assert_close(module(changed_last, image), out)  # the classifier's input plays no part
    changed_mid = list(features)
    changed_mid[1] = torch.randn_like(features[1])
    assert not torch.allclose(module(changed_mid, image), out)


def test_correlation_stage_options_are_validated():
    channels = TinyBackbone().stage_channels
    with pytest.raises(ConfigError, match="pcm_stages: stage index 4 out of range"):
        CorrelationFeatures(channels, (-2, 4), (8, 8))
    with pytest.raises(ConfigError, match="pcm_stage_dims: needs one size per entry"):
        CorrelationFeatures(channels, (-3, -2), (8,))
    with pytest.raises(ConfigError, match="prcm_stages: repeated"):
        CorrelationFeatures(channels, (2, -2), (8, 8), option="prcm")


def test_minmax_normalise_removes_the_floor():
    x = torch.tensor([[[[0.3, 0.4], [0.5, 1.3]]]])  # a map with a floor of 0.3
    expected = torch.tensor([[[[0.0, 0.1], [0.2, 1.0]]]])
    torch.testing.assert_close(minmax_normalise(x), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(minmax_normalise(x + 5.0), minmax_normalise(x), atol=1e-4, rtol=0)
    assert minmax_normalise(-x).abs().max() == 0  # ReLU first: a negative map is all zero


def test_pcm_seed_background_and_max_only():
    raw = torch.tensor([[[[2.0, 0.0]], [[1.0, 4.0]]]])  # (1, 2 classes, 1, 2)
    seed = correlation_seed(raw)
    # normalised fg: class0 [1, 0], class1 [0.25, 1]; bg = 1 - max = [0, 0]; non-max fg zeroed
    torch.testing.assert_close(seed, torch.tensor([[[[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]]]), atol=1e-4, rtol=0)


def test_ohem_l1_keeps_the_hardest_fraction():
    prediction = torch.arange(1.0, 11.0).view(1, 1, 2, 5)
    assert ohem_l1(prediction, torch.zeros_like(prediction), 0.2).item() == pytest.approx(9.5)
    assert ohem_l1(prediction, torch.zeros_like(prediction), 1.0).item() == pytest.approx(5.5)
    with pytest.raises(ConfigError, match="ohem_ratio"):
        ohem_l1(prediction, prediction, 0.0)


def test_bad_options_raise_config_error():
    with pytest.raises(ConfigError, match="^scale: must be positive and not 1"):
        SEAM(TinyBackbone(), 3, scale=0.0)
    with pytest.raises(ConfigError, match="pcm_stage_dims"):
        SEAM(TinyBackbone(), 3, pcm_stage_dims=(1, 2, 3, 4, 5))
    with pytest.raises(ConfigError, match="pcm_stages"):
        SEAM(TinyBackbone(), 3, pcm_stages=(-5, -2))
    with pytest.raises(ConfigError, match="^resolution: unknown 'image'"):
        SEAM(TinyBackbone(), 3, resolution="image")


def test_training_step_terms_and_cam_shape():
    torch.manual_seed(0)
    method = build_method("seam", TinyBackbone(), 3, scale=0.5)
    images, labels = coloured_squares()
    out = method.training_step(images, labels)
    assert set(out) == {"loss", "cls", "min", "er", "ecr"}
    assert out["loss"].requires_grad and all(not out[k].requires_grad for k in ("cls", "min", "er", "ecr"))
    torch.testing.assert_close(out["loss"].detach(), out["cls"] + out["min"] + out["er"] + out["ecr"])
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.pcm.parameters())  # L_ECR trains PCM
    assert method.classifier.weight.grad.abs().sum() > 0
    assert method.cam(images).shape == (4, 3, 64, 64)  # the authors' network output: at the input size
    on_grid = SEAM(TinyBackbone(), 3, scale=0.5, resolution="grid")
    assert on_grid.cam(images).shape == (4, 3, 4, 4)
    assert on_grid.training_step(images, labels)["loss"].isfinite()


def test_branch_size_is_that_of_scale_factor():
    """A(I) has F.interpolate(scale_factor=0.3)'s size, floor(side * 0.3), as the authors' img2."""
    for height, width in [(20, 20), (448, 448), (225, 333), (7, 11)]:
        expected = F.interpolate(torch.zeros(1, 1, height, width), scale_factor=0.3, mode="bilinear",
                                 align_corners=True).shape[-2:]
        assert scaled_size(height, width, 0.3) == tuple(expected)


def test_short_training_reduces_loss():
    torch.manual_seed(0)
    method = SEAM(TinyBackbone(), 3, scale=0.5)
    images, labels = coloured_squares()
    optimizer = torch.optim.SGD(method.param_groups(0.01), momentum=0.9)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = method.training_step(images, labels)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3


def test_low_activation_loss_is_the_mean_of_the_weakest_quarter():
    fg = torch.zeros(1, 2, 2, 4)
    fg[0, 0] = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
    fg[0, 1, 0, 0] = 0.9  # the per-pixel max counts, not the channel: pixel (0, 0) is strong
    # per-pixel maxima: 0.9, 0.2, 0.3, 0.4, 0.5, ...; the weakest 2 of 8 are 0.2 and 0.3
    torch.testing.assert_close(low_activation_loss(fg), torch.tensor(0.25))
    assert low_activation_loss(-fg).item() == 0.0  # ReLU: negative maps cost nothing
