"""CPN: complementary masks (grid, SLIC), CP loss, PRCM, short training run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cam.maps import add_background, correlation_seed
from pipeline.cam.methods import build_method
from pipeline.cam.methods.complementary_patches import hidden_regions, scaled_segments
from pipeline.cam.methods.correlation import (
    PixelRegionCorrelationModule,
    authors_key_layout,
    pcm_propagate,
    region_attention,
    spatial_gather,
)
from pipeline.cam.methods.cpn import (
    CPN,
    complementary_loss,
    complementary_masks,
    cross_target,
    kept_fraction,
    neutral_colour,
)
from pipeline.errors import ConfigError, DataError
from pipeline.models.backbones.tiny import TinyBackbone

from conftest import coloured_squares

MSRC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "msrc_objects" / "JPEGImages"


def assert_exact_complements(keep1: np.ndarray, keep2: np.ndarray, shape: tuple[int, int]) -> None:
    assert keep1.shape == keep2.shape == shape and keep1.dtype == keep2.dtype == bool
    assert not (keep1 & keep2).any()  # no pixel kept twice
    assert (keep1 | keep2).all()  # every pixel kept once
    assert keep1.any() and keep2.any()


def test_grid_masks_are_complements_of_whole_cells():
    rng = np.random.default_rng(0)
    keep1, keep2 = complementary_masks(30, 40, rng, "grid", grid_size=4, draw="half")
    assert_exact_complements(keep1, keep2, (30, 40))
    rows, cols = np.arange(30) * 4 // 30, np.arange(40) * 4 // 40
    cells = rows[:, None] * 4 + cols[None, :]
    kept_cells = [bool(keep1[cells == c].all()) for c in range(16)]
    assert all(keep1[cells == c].all() or not keep1[cells == c].any() for c in range(16))  # whole cells
    assert sum(kept_cells) == 8  # exactly half hidden in I1, the other half in I2
    other1, _ = complementary_masks(30, 40, rng, "grid", grid_size=4, draw="half")
    draws = {complementary_masks(30, 40, rng, "grid", grid_size=4, draw="half")[0].tobytes() for _ in range(10)}
    assert len(draws | {other1.tobytes()}) > 1  # random


def test_grid_odd_region_count_hides_floor_half():
    keep1, keep2 = complementary_masks(9, 9, np.random.default_rng(1), "grid", grid_size=3, draw="half")
    assert_exact_complements(keep1, keep2, (9, 9))
    assert (~keep1).sum() == 4 * 9  # 4 of 9 cells of 3x3 pixels hidden in I1


def test_authors_draw_hides_drawn_ids_with_replacement():
    """hide_patch_ss: floor((n + 1) / 2) ids drawn with replacement from 0..n, 0 naming no region: on 16
    cells 8 draws hide 16 * (1 - (16/17)^8) = 6.15 distinct cells on average, sometimes all 8, never 9."""
    regions = np.arange(16)
    rng = np.random.default_rng(0)
    counts = np.array([len(np.unique(hidden_regions(regions, rng, "authors"))) for _ in range(4000)])
    assert counts.max() <= 8 and counts.min() >= 1
    assert abs(counts.mean() - 16 * (1 - (16 / 17) ** 8)) < 0.1
    keep1, keep2 = complementary_masks(30, 40, rng, "grid", grid_size=4)  # the default draw
    assert not (keep1 & keep2).any() and (keep1 | keep2).all()
    assert len(np.unique(hidden_regions(regions, rng, "half"))) == 8
    with pytest.raises(ConfigError, match="^hide_draw"):
        hidden_regions(regions, rng, "all")


def test_superpixel_count_scales_with_the_crop_area():
    assert scaled_segments(300, 448, 448, 448) == 300  # the authors' crop
    assert scaled_segments(300, 224, 224, 448) == 75
    assert scaled_segments(300, 160, 160, 448) == 38
    assert scaled_segments(300, 8, 8, 448) == 2  # at least two regions
    assert scaled_segments(300, 224, 224, 0) == 300  # 0: as it is


def test_slic_sees_the_normalised_image():
    """CPN's _masks runs SLIC on the backbone-normalised image (the authors' hide_patch_ss gets the
    normalised tensor), n_segments scaled to the crop."""
    images = torch.from_numpy(_smooth_image(48, 56)).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    method = CPN(TinyBackbone(), 3, slic_reference_size=56)
    torch.manual_seed(3)
    keep1, keep2 = method._masks(images)
    torch.manual_seed(3)
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
    normalised = method.backbone.normalize(images).permute(0, 2, 3, 1).numpy()
    n = scaled_segments(300, 48, 56, 56)
    for i in range(2):
        expected, _ = complementary_masks(48, 56, rng, "slic", n_segments=n, image=normalised[i])
        assert np.array_equal(keep1[i, 0].numpy().astype(bool), expected)
    torch.testing.assert_close(keep1 + keep2, torch.ones_like(keep1))


def _smooth_image(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    return np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x * y)], axis=-1).astype(np.float32)


def test_slic_masks_are_complements_of_whole_superpixels():
    from skimage.segmentation import slic

    image = _smooth_image(48, 56)
    keep1, keep2 = complementary_masks(48, 56, np.random.default_rng(0), "slic", n_segments=300, image=image,
                                       draw="half")
    assert_exact_complements(keep1, keep2, (48, 56))
    segments = slic(image, n_segments=300, compactness=10.0, start_label=0, channel_axis=-1)
    ids = np.unique(segments)
    assert len(ids) > 20
    whole = [keep1[segments == s].all() or not keep1[segments == s].any() for s in ids]
    assert all(whole)
    assert sum(bool(keep1[segments == s].all()) for s in ids) == len(ids) - len(ids) // 2


def test_slic_masks_on_tiny_image_and_real_photo():
    keep1, keep2 = complementary_masks(8, 8, np.random.default_rng(0), "slic", n_segments=300,
                                       image=_smooth_image(8, 8))
    assert_exact_complements(keep1, keep2, (8, 8))
    photos = sorted(MSRC.glob("*.jpg"))[:1]
    if photos:
        from PIL import Image

        photo = np.asarray(Image.open(photos[0]).convert("RGB"), dtype=np.float32) / 255.0
        h, w = photo.shape[:2]
        keep1, keep2 = complementary_masks(h, w, np.random.default_rng(0), "slic", n_segments=300, image=photo)
        assert_exact_complements(keep1, keep2, (h, w))
        assert 0.25 < keep1.mean() < 0.75


def test_mask_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="^grid_size"):
        complementary_masks(8, 8, rng, "grid", grid_size=9)
    with pytest.raises(ConfigError, match="^patch_mode"):
        complementary_masks(8, 8, rng, "squares")
    with pytest.raises(DataError, match="slic needs"):
        complementary_masks(8, 8, rng, "slic")


def test_complementary_loss_weights_each_half_by_the_pixels_it_keeps():
    keep1 = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])  # I1 keeps 3 of 4 pixels, I2 the other one
    w1 = kept_fraction(keep1)
    torch.testing.assert_close(w1, torch.full((1, 1, 1, 1), 0.75))
    w2 = kept_fraction(1 - keep1)
    # two classes; class 1 absent (all zero): it still counts in the mean, as the authors' torch.mean
    full = torch.zeros(1, 2, 2, 2)
    full[0, 0] = torch.tensor([[1.0, 0.5], [0.5, 0.0]])
    half1 = torch.zeros(1, 2, 2, 2)
    half1[0, 0] = torch.tensor([[1.0, 0.6], [0.2, 0.0]])
    half2 = torch.zeros(1, 2, 2, 2)
    half2[0, 0] = torch.tensor([[1.0, 0.2], [0.6, 0.8]])
    # target 0.75 * half1 + 0.25 * half2 = [[1, 0.5], [0.3, 0.2]]; |gap| = [[0, 0], [0.2, 0.2]]
    loss = complementary_loss(full, w1 * half1, w2 * half2)
    torch.testing.assert_close(loss, torch.tensor(0.4 / 8))
    # the same halves un-weighted sum to values up to 2: the old, much larger gap
    assert complementary_loss(full, half1, half2) > 5 * loss
    # a half equal to the full map with both weights summing to 1 is a perfect target
    torch.testing.assert_close(complementary_loss(full, w1 * full, w2 * full), torch.tensor(0.0))


def test_cross_target_keeps_the_maximal_channel_of_the_raw_difference():
    # 2x2 image, background + 2 classes; background = 1 - max fg in both maps
    full_fg = torch.tensor([[[[0.9, 0.2], [0.0, 0.5]], [[0.1, 0.6], [0.0, 0.4]]]])
    half_fg = torch.tensor([[[[0.3, 0.2], [0.0, 0.5]], [[0.1, 0.9], [0.0, 0.1]]]])
    full, half = add_background(full_fg), add_background(half_fg)
    # differences: bg [[0.6-0.9?]] -> bg_full = [[0.1, 0.4], [1, 0.5]], bg_half = [[0.7, 0.1], [1, 0.5]]
    # bg diff [[-0.6, 0.3], [0, 0]]; class0 [[0.6, 0], [0, 0]]; class1 [[0, -0.3], [0, 0.3]]
    expected = torch.tensor([[
        [[0.0, 0.3], [0.0, 0.0]],   # background wins at (0, 1)
        [[0.6, 0.0], [0.0, 0.0]],   # class 0 at (0, 0)
        [[0.0, 0.0], [0.0, 0.3]],   # class 1 at (1, 1)
    ]])
    target = cross_target(full, half)
    # (1, 0): all three differences are 0, a tie: every channel keeps its (zero) value
    torch.testing.assert_close(target, expected, atol=1e-6, rtol=0)
    # a pixel where every difference is negative keeps its (negative) maximum, as max_onehot
    negative = cross_target(torch.zeros(1, 2, 1, 1), torch.tensor([[[[0.5]], [[0.2]]]]))
    torch.testing.assert_close(negative, torch.tensor([[[[0.0]], [[-0.2]]]]))


def test_neutral_colour_is_the_normalisation_mean():
    backbone = TinyBackbone()
    torch.testing.assert_close(neutral_colour(backbone).flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_spatial_gather_and_region_attention():
    features = torch.randn(2, 5, 3, 4)
    flat_seed = torch.zeros(2, 3, 3, 4)  # softmax of a constant is uniform: the plain mean
    context = spatial_gather(features, flat_seed)
    assert context.shape == (2, 3, 5)
    torch.testing.assert_close(context[:, 0], features.mean(dim=(2, 3)))
    peaked = torch.zeros(2, 3, 3, 4)
    peaked[:, 1, 0, 0] = 1.0  # weight e at one pixel, 1 elsewhere
    weights = torch.ones(12)
    weights[0] = torch.e
    expected = (features.flatten(2) * weights).sum(-1) / weights.sum()
    torch.testing.assert_close(spatial_gather(features, peaked)[:, 1], expected)

    keys = torch.randn(2, 3, 6)
    pixels = torch.randn(2, 6, 3, 4)
    attention = region_attention(pixels, keys)
    assert attention.shape == (2, 3, 3, 4) and (attention >= 0).all()
    torch.testing.assert_close(attention.sum(dim=(2, 3)), torch.ones(2, 3))  # softmax over pixels
    logits = (keys @ pixels.flatten(2)) / 3 ** 0.5
    torch.testing.assert_close(attention.flatten(2), torch.softmax(logits, dim=-1))


def test_prcm_is_pcm_plus_region_term_times_the_seed():
    torch.manual_seed(0)
    backbone = TinyBackbone()
    prcm = PixelRegionCorrelationModule(backbone.stage_channels, (-3, -2), (8, 16), 12)
    images = torch.rand(2, 3, 64, 64)
    features = backbone(images)
    seed = correlation_seed(torch.randn(2, 3, *features[-1].shape[-2:]))
    out = prcm(seed, features, images)
    assert out.shape == seed.shape and (out >= 0).all()
    f = prcm.features(features, images)
    embedding = prcm.embed(f)
    keys = torch.relu(prcm.key(spatial_gather(f, seed)))
    expected = pcm_propagate(seed, embedding) + region_attention(torch.relu(embedding), authors_key_layout(keys)) * seed
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(prcm(torch.zeros_like(seed), features, images), torch.zeros_like(seed))
    prcm.key_layout = "per_class"  # the paper's reading: one key per region
    expected = pcm_propagate(seed, embedding) + region_attention(torch.relu(embedding), keys) * seed
    torch.testing.assert_close(prcm(seed, features, images), expected)
    with pytest.raises(ConfigError, match="^key_layout"):
        PixelRegionCorrelationModule(backbone.stage_channels, key_layout="transposed")


def test_authors_key_layout_reads_f10_output_in_memory_order():
    """resnet38_CPN.py PRCM: f10's (B, E, K, 1) output viewed as (B, K, E): key r = the r-th run of E
    values of the row-major (E x K) array, so it mixes channels of several regions."""
    b, k, e = 2, 4, 6
    per_region = torch.randn(b, k, e)  # [b, region, channel]
    conv_layout = per_region.transpose(1, 2)[..., None].contiguous()  # (B, E, K, 1), as f10's output
    keys = authors_key_layout(per_region)
    torch.testing.assert_close(keys, conv_layout.view(b, k, -1))
    flat = per_region.transpose(1, 2).flatten(1)  # channel c of region r at c * K + r
    assert keys[0, 1, 0] == flat[0, e] == per_region[0, e % k, e // k]
    assert not torch.equal(keys, per_region)


def test_training_step_terms_and_cam_shapes():
    torch.manual_seed(0)
    images, labels = coloured_squares()
    method = build_method("cpn", TinyBackbone(), 3)
    out = method.training_step(images, labels)
    assert set(out) == {"loss", "cls", "min", "cp", "cr"}
    torch.testing.assert_close(out["loss"].detach(), out["cls"] + out["min"] + out["cp"] + out["cr"])
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.prcm.parameters())
    refined = method.cam(images)
    # PCM output (a convex combination of seed values in [0, 1]) + softmax weight x seed: in [0, 2]
    assert refined.shape == (4, 3, 64, 64) and (refined >= 0).all() and (refined <= 2 + 1e-5).all()
    raw = CPN(TinyBackbone(), 3, cam_source="raw")
    assert raw.cam(images).shape == (4, 3, 64, 64)  # the authors' network output: at the input size
    assert CPN(TinyBackbone(), 3, cam_source="raw", resolution="grid").cam(images).shape == (4, 3, 4, 4)
    with pytest.raises(ConfigError, match="^cam_source"):
        CPN(TinyBackbone(), 3, cam_source="both")


@pytest.mark.parametrize("separate", [True, False])
def test_cp_loss_moves_only_the_full_image_cam(separate):
    """The weighted halves are a fixed target: with only L_CP on, the half images' raw CAMs get no
    gradient (the refined term reaches them only through the detached seed)."""
    torch.manual_seed(0)
    images, labels = coloured_squares()
    method = CPN(TinyBackbone(), 3, cls_weight=0.0, prcm_weight=0.0, separate_forward=separate)
    outputs = []

    def keep_output(module, inputs, output):
        output.retain_grad()
        outputs.append(output)

    method.classifier.register_forward_hook(keep_output)
    method.training_step(images, labels)["loss"].backward()
    grads = torch.cat([o.grad for o in outputs])  # classifier outputs of I, I1, I2 in forward order
    b = images.shape[0]
    assert len(outputs) == (3 if separate else 1)
    assert grads[:b].abs().sum() > 0
    assert grads[b:].abs().sum() == 0


@pytest.mark.parametrize("options", [{}, {"patch_mode": "slic", "n_segments": 50}])
def test_short_training_reduces_the_classification_loss(options):
    """On 4x4 toy feature maps L_CP and L_CR stay at their noise level under fresh random pairs (they are
    tested with the PRCM alone below); the classification term must fall clearly."""
    torch.manual_seed(0)
    method = CPN(TinyBackbone(), 3, **options)
    images, labels = coloured_squares()
    optimizer = torch.optim.SGD(method.param_groups(0.003), momentum=0.9)
    history = []
    for _ in range(30):
        optimizer.zero_grad()
        out = method.training_step(images, labels)
        out["loss"].backward()
        optimizer.step()
        history.append(out["cls"].item())
    assert all(torch.isfinite(v) for v in out.values())
    assert sum(history[-3:]) < 0.5 * sum(history[:3])


def test_prcm_training_reduces_the_correlation_losses():
    """Backbone and classifier frozen, one fixed complementary pair: the correlation layers alone learn to
    meet the cross-regularisation, complementary and low-activation targets, so those terms fall."""
    torch.manual_seed(0)
    method = CPN(TinyBackbone(), 3)
    for p in [*method.backbone.parameters(), *method.classifier.parameters()]:
        p.requires_grad_(False)
    optimizer = torch.optim.SGD(method.prcm.parameters(), lr=1.0, momentum=0.9)
    images, labels = coloured_squares()
    losses = []
    for _ in range(20):
        torch.manual_seed(1)  # the same complementary pair every step
        optimizer.zero_grad()
        out = method.training_step(images, labels)
        out["loss"].backward()
        optimizer.step()
        losses.append((out["cr"] + out["cp"] + out["min"]).item())
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3])
