import numpy as np
import pytest

from pipeline.metrics import (
    ThresholdSweep,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    scores_to_label,
)


def test_confusion_matrix_counts_and_ignores_void():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 2]])
    conf = confusion_matrix(pred, gt, 3)
    expected = np.array([[1, 1, 0], [0, 2, 0], [0, 0, 1]])
    np.testing.assert_array_equal(conf, expected)


def test_miou_on_hand_computed_confusion():
    conf = np.array([[1, 1, 0], [0, 2, 0], [0, 0, 1]])
    # IoU: class0 1/(1+1+0)=0.5, class1 2/(2+1)=2/3, class2 1/1
    np.testing.assert_allclose(iou_per_class(conf), [0.5, 2 / 3, 1.0])
    assert mean_iou(conf) == pytest.approx((0.5 + 2 / 3 + 1) / 3)


def test_absent_class_is_excluded_from_mean():
    conf = np.array([[3, 0, 0], [0, 1, 0], [0, 0, 0]])
    iou = iou_per_class(conf)
    assert np.isnan(iou[2])
    assert mean_iou(conf) == pytest.approx(1.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 2)


def test_scores_to_label_uses_threshold_and_keys():
    scores = np.array([[[0.9, 0.1], [0.3, 0.5]], [[0.2, 0.05], [0.6, 0.4]]])
    keys = np.array([3, 7])
    label = scores_to_label(scores, keys, threshold=0.35)
    np.testing.assert_array_equal(label, [[3, 0], [7, 3]])
    assert scores_to_label(np.zeros((0, 2, 2)), np.zeros(0), 0.5).sum() == 0


def test_threshold_sweep_matches_per_threshold_evaluation():
    rng = np.random.default_rng(0)
    thresholds = np.round(np.arange(0.0, 0.6, 0.05), 2)
    sweep = ThresholdSweep(thresholds, num_classes=5)
    images = []
    for _ in range(4):
        keys = np.sort(rng.choice(np.arange(1, 5), size=rng.integers(0, 3), replace=False))
        scores = rng.random((len(keys), 9, 11)).astype(np.float32)
        gt = rng.integers(0, 5, size=(9, 11))
        gt[rng.random(gt.shape) < 0.1] = 255
        sweep.update(scores, keys, gt)
        images.append((scores, keys, gt))
    for i, t in enumerate(thresholds):
        direct = sum(confusion_matrix(scores_to_label(s, k, t), g, 5) for s, k, g in images)
        np.testing.assert_array_equal(sweep.confusions()[i], direct)
    curve = sweep.miou_curve()
    assert curve.shape == thresholds.shape


def test_threshold_sweep_rejects_unsorted_thresholds():
    with pytest.raises(ValueError, match="increasing"):
        ThresholdSweep(np.array([0.2, 0.1]), 3)
