"""Dense CRF and CAM -> pseudo-mask conversion on synthetic images with known answers."""

import numpy as np
import pytest

from pipeline.errors import ConfigError, DataError
from pipeline.pseudo_masks.crf import (
    background_score,
    cam_to_pseudo_mask,
    dense_crf,
    dense_crf_labels,
    scores_to_pseudo_mask,
)

H, W = 48, 64


def two_region_scene(seed: int = 0):
    """A red disc on a blue background (slightly noisy colours) and its true label map (1 = disc)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    truth = ((yy - 24) ** 2 + (xx - 30) ** 2 < 15 ** 2).astype(np.int64)
    image = np.where(truth[..., None] == 1, [200, 40, 40], [30, 60, 180]).astype(np.float64)
    image = np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
    return image, truth


def test_crf_recovers_regions_from_noisy_unary():
    image, truth = two_region_scene()
    rng = np.random.default_rng(1)
    p_disc = np.clip(np.where(truth == 1, 0.6, 0.4) + rng.normal(0, 0.25, truth.shape), 0.01, 0.99)
    probs = np.stack([1 - p_disc, p_disc]).astype(np.float32)
    posterior = dense_crf(image, probs)
    assert posterior.shape == probs.shape and posterior.dtype == np.float32
    np.testing.assert_allclose(posterior.sum(axis=0), 1.0, atol=1e-4)
    unary_acc = (probs.argmax(0) == truth).mean()
    crf_acc = (posterior.argmax(0) == truth).mean()
    assert crf_acc > 0.98
    assert crf_acc > unary_acc + 0.2


def test_crf_snaps_shifted_boundary_to_colour_edge():
    image, truth = two_region_scene()
    shifted = np.roll(truth, 3, axis=1)  # the unary's boundary is 3 px off the colour edge
    probs = np.stack([np.where(shifted == 0, 0.65, 0.35), np.where(shifted == 1, 0.65, 0.35)]).astype(np.float32)
    crf_acc = (dense_crf(image, probs).argmax(0) == truth).mean()
    assert crf_acc > 0.98 and crf_acc > (shifted == truth).mean()


def test_unnormalised_scores_give_the_same_posterior():
    image, truth = two_region_scene()
    probs = np.stack([np.where(truth == 0, 0.7, 0.3), np.where(truth == 1, 0.7, 0.3)]).astype(np.float32)
    np.testing.assert_allclose(dense_crf(image, probs), dense_crf(image, probs * 0.37), atol=1e-4)


def test_dense_crf_rejects_mismatched_image():
    with pytest.raises(DataError, match="image must be"):
        dense_crf(np.zeros((10, 10, 3), np.uint8), np.ones((2, 12, 10), np.float32))


def test_label_crf_cleans_salt_noise():
    image, truth = two_region_scene()
    noisy = truth.copy()
    flips = np.random.default_rng(2).random(truth.shape) < 0.1
    noisy[flips] = 1 - noisy[flips]
    refined = dense_crf_labels(image, noisy, 2)
    assert (refined == truth).mean() > 0.98 > (noisy == truth).mean()


def disc_cam():
    """A CAM of the disc (peak 1 at the centre, ~0.5 at its edge) as an unsharp localisation."""
    yy, xx = np.mgrid[:H, :W]
    dist = np.sqrt((yy - 24) ** 2 + (xx - 30) ** 2)
    return np.clip(1.0 - dist / 30.0, 0, 1).astype(np.float32)[None]


def test_only_labelled_classes_and_background_appear():
    image, truth = two_region_scene()
    cams = np.concatenate([disc_cam(), 0.05 * disc_cam()])  # a second, nearly absent labelled class
    keys = np.array([7, 15])
    for use_crf in (True, False):
        mask = cam_to_pseudo_mask(image, cams, keys, bg_threshold=0.45, use_crf=use_crf)
        assert mask.dtype == np.uint8 and mask.shape == (H, W)
        assert set(np.unique(mask)) <= {0, 7, 15}
        assert ((mask == 7) == (truth == 1)).mean() > 0.9


def test_crf_pseudo_mask_matches_regions():
    image, truth = two_region_scene()
    mask = cam_to_pseudo_mask(image, disc_cam(), [3], bg_threshold=0.5, use_crf=True)
    plain = cam_to_pseudo_mask(image, disc_cam(), [3], bg_threshold=0.5, use_crf=False)
    crf_acc = ((mask == 3) == (truth == 1)).mean()
    assert crf_acc > 0.98 and crf_acc >= ((plain == 3) == (truth == 1)).mean()


def test_threshold_versus_power_background():
    cams = np.array([[[0.1, 0.3, 0.6, 0.95]]], dtype=np.float32)
    np.testing.assert_allclose(background_score(cams, "threshold", bg_threshold=0.2), 0.2)
    np.testing.assert_allclose(background_score(cams, "power", bg_alpha=4), (1 - cams[0]) ** 4, rtol=1e-5)
    image = np.zeros((1, 4, 3), np.uint8)
    threshold = cam_to_pseudo_mask(image, cams, [5], "threshold", bg_threshold=0.2, use_crf=False)
    power = cam_to_pseudo_mask(image, cams, [5], "power", bg_alpha=4, use_crf=False)
    np.testing.assert_array_equal(threshold, [[0, 5, 5, 5]])  # 0.1 < 0.2 only at the first pixel
    np.testing.assert_array_equal(power, [[0, 5, 5, 5]])      # 0.9^4 = 0.66 > 0.1; 0.7^4 = 0.24 < 0.3
    low_alpha = cam_to_pseudo_mask(image, cams, [5], "power", bg_alpha=1, use_crf=False)
    np.testing.assert_array_equal(low_alpha, [[0, 0, 5, 5]])  # 0.7 > 0.3: more background at alpha 1
    with pytest.raises(ConfigError, match="bg_mode"):
        background_score(cams, "median")


def test_low_confidence_pixels_are_ignored():
    scores = np.array([[[0.5, 0.9, 0.1]], [[0.5, 0.1, 0.9]]], dtype=np.float32)  # bg, class 4
    mask = scores_to_pseudo_mask(np.zeros((1, 3, 3), np.uint8), scores, [4], use_crf=False, confidence=0.8)
    np.testing.assert_array_equal(mask, [[255, 0, 4]])
    image, _ = two_region_scene()
    scores = np.concatenate([np.full((1, H, W), 0.5, np.float32), disc_cam()])
    top = dense_crf(image, scores, iterations=2).max(axis=0)
    confidence = float(np.quantile(top, 0.2))
    crf_mask = scores_to_pseudo_mask(image, scores, [3], confidence=confidence, iterations=2)
    np.testing.assert_array_equal(crf_mask == 255, top < confidence)
    assert 0 < (crf_mask == 255).mean() < 0.5


def test_no_labelled_class_is_all_background():
    image, _ = two_region_scene()
    mask = cam_to_pseudo_mask(image, np.zeros((0, H, W), np.float32), np.zeros(0, np.int64), "power")
    assert mask.shape == (H, W) and not mask.any()


def test_shape_errors_name_the_problem():
    image, _ = two_region_scene()
    with pytest.raises(DataError, match="K=2 keys"):
        cam_to_pseudo_mask(image, disc_cam(), [1, 2])
    with pytest.raises(DataError, match="1 \\+ K"):
        scores_to_pseudo_mask(image, np.ones((3, H, W), np.float32), [1])
