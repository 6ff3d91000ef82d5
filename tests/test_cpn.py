"""CPN: complementary masks (grid, SLIC), CP loss, PRCM, short training run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError, DataError
from pipeline.methods import build_method
from pipeline.methods.cpn import CPN, complementary_loss, complementary_masks, neutral_colour
from pipeline.models.backbones.tiny import TinyBackbone
from pipeline.models.correlation import (
    PixelRegionCorrelationModule,
    pixel_region_correlation,
    region_prototypes,
)

from conftest import coloured_squares

MSRC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "msrc_objects" / "JPEGImages"


def assert_exact_complements(keep1: np.ndarray, keep2: np.ndarray, shape: tuple[int, int]) -> None:
    assert keep1.shape == keep2.shape == shape and keep1.dtype == keep2.dtype == bool
    assert not (keep1 & keep2).any()  # no pixel kept twice
    assert (keep1 | keep2).all()  # every pixel kept once
    assert keep1.any() and keep2.any()


def test_grid_masks_are_complements_of_whole_cells():
    rng = np.random.default_rng(0)
    keep1, keep2 = complementary_masks(30, 40, rng, "grid", grid_size=4)
    assert_exact_complements(keep1, keep2, (30, 40))
    rows, cols = np.arange(30) * 4 // 30, np.arange(40) * 4 // 40
    cells = rows[:, None] * 4 + cols[None, :]
    kept_cells = [bool(keep1[cells == c].all()) for c in range(16)]
    assert all(keep1[cells == c].all() or not keep1[cells == c].any() for c in range(16))  # whole cells
    assert sum(kept_cells) == 8  # exactly half hidden in I1, the other half in I2
    other1, _ = complementary_masks(30, 40, rng, "grid", grid_size=4)
    draws = {complementary_masks(30, 40, rng, "grid", grid_size=4)[0].tobytes() for _ in range(10)}
    assert len(draws | {other1.tobytes()}) > 1  # random


def test_grid_odd_region_count_hides_floor_half():
    keep1, keep2 = complementary_masks(9, 9, np.random.default_rng(1), "grid", grid_size=3)
    assert_exact_complements(keep1, keep2, (9, 9))
    assert (~keep1).sum() == 4 * 9  # 4 of 9 cells of 3x3 pixels hidden in I1


def _smooth_image(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    return np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x * y)], axis=-1).astype(np.float32)


def test_slic_masks_are_complements_of_whole_superpixels():
    from skimage.segmentation import slic

    image = _smooth_image(48, 56)
    keep1, keep2 = complementary_masks(48, 56, np.random.default_rng(0), "slic", n_segments=300, image=image)
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
    with pytest.raises(ConfigError, match="cpn.grid_size"):
        complementary_masks(8, 8, rng, "grid", grid_size=9)
    with pytest.raises(ConfigError, match="cpn.patch_mode"):
        complementary_masks(8, 8, rng, "squares")
    with pytest.raises(DataError, match="slic needs"):
        complementary_masks(8, 8, rng, "slic")


def test_complementary_loss_zero_for_additive_halves_positive_otherwise():
    cam = torch.rand(2, 3, 6, 6)
    cam[..., 0, 0] = 2.0  # the maximum appears in both halves,
    cam[..., 5, 5] = 2.0  # so each half normalises like the whole
    left = torch.zeros(1, 1, 6, 6)
    left[..., :3] = 1.0
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert complementary_loss(cam, cam * left, cam * (1 - left), labels).item() < 1e-6
    assert complementary_loss(cam, cam, cam, labels).item() > 0.1
    no_labels = torch.zeros(2, 3)
    assert complementary_loss(cam, cam, cam, no_labels).item() == 0.0


def test_neutral_colour_is_the_normalisation_mean():
    backbone = TinyBackbone()
    torch.testing.assert_close(neutral_colour(backbone).flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_region_prototypes_and_correlation():
    embedding = torch.randn(2, 5, 4, 4)
    cams = torch.zeros(2, 2, 4, 4)
    cams[:, 0, :2] = 1.0
    cams[:, 1, 2:] = 1.0
    prototypes = region_prototypes(cams, embedding)
    assert prototypes.shape == (2, 2, 5)
    torch.testing.assert_close(prototypes[:, 0], embedding[:, :, :2].mean(dim=(2, 3)))
    refined = pixel_region_correlation(embedding, prototypes)
    assert refined.shape == (2, 2, 4, 4) and (refined >= 0).all()
    sums = refined.sum(dim=1)
    assert torch.all(((sums - 1).abs() < 1e-4) | (sums == 0))


def test_prcm_module_shapes():
    backbone = TinyBackbone()
    prcm = PixelRegionCorrelationModule(backbone.stage_channels, (8, 16), 12)
    images = torch.rand(2, 3, 64, 64)
    features = backbone(images)
    cams = torch.rand(2, 4, *features[-1].shape[-2:])
    assert prcm(cams, features, images).shape == cams.shape
    coarse = torch.rand(2, 4, 2, 2)  # resized to the feature grid
    assert prcm(coarse, features, images).shape == cams.shape


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
    assert refined.shape == (4, 3, 4, 4) and (refined >= 0).all() and (refined <= 1 + 1e-5).all()
    raw = CPN(TinyBackbone(), 3, cam_source="raw")
    assert raw.cam(images).shape == (4, 3, 4, 4)
    with pytest.raises(ConfigError, match="cpn.cam_source"):
        CPN(TinyBackbone(), 3, cam_source="both")


def test_cp_loss_moves_only_the_full_image_cam():
    """The halves' sum is a fixed target: with only L_CP on, the half images' CAMs get no gradient
    through the raw term, so a classifier gradient exists only via the full image."""
    torch.manual_seed(0)
    images, labels = coloured_squares()
    method = CPN(TinyBackbone(), 3, cls_weight=0.0, prcm_weight=0.0)
    seen = []

    def keep_grad(module, inputs, output):
        output.register_hook(seen.append)

    method.classifier.register_forward_hook(keep_grad)
    method.training_step(images, labels)["loss"].backward()
    grad = seen[0]  # w.r.t. the classifier output of the triplet (I, I1, I2)
    b = images.shape[0]
    assert grad[:b].abs().sum() > 0
    assert grad[b:].abs().sum() == 0


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
    """Backbone and classifier frozen, one fixed complementary pair: the PRCM embedding alone learns to
    meet the cross-regularisation and complementary targets, so the total loss falls."""
    torch.manual_seed(0)
    method = CPN(TinyBackbone(), 3)
    for p in [*method.backbone.parameters(), *method.classifier.parameters()]:
        p.requires_grad_(False)
    optimizer = torch.optim.SGD(method.prcm.parameters(), lr=0.1, momentum=0.9)
    images, labels = coloured_squares()
    losses = []
    for _ in range(20):
        torch.manual_seed(1)  # the same complementary pair every step
        optimizer.zero_grad()
        loss = method.training_step(images, labels)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3])
