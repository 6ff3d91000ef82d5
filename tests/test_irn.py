"""IRN: relation labels, path-max boundary affinities, the boundary branch and the boundary random walk."""
import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError, DataError
from pipeline.models.backbones import build_backbone
from pipeline.propagation.irn.labels import relation_labels
from pipeline.propagation.irn.network import BoundaryNet, boundary_affinities, path_cells
from pipeline.propagation.irn.walk import boundary_transition, propagate_boundary
from pipeline.propagation.pairs import pair_indices, radius_offsets
from pipeline.propagation.sparse_walk import random_walk


def _no_crf(image, labels, num_labels):
    return labels


# ---------------------------------------------------------------- relation labels


def test_relation_labels_known_answer_on_a_hand_made_cam():
    cams = np.zeros((2, 4, 4), np.float32)
    cams[0, 0, :] = [0.9, 0.31, 0.2, 0.04]  # class 3: confident fg, fg, ignore (0.05..0.30), bg
    cams[1, 1, :] = [0.5, 0.1, 0.01, 0.0]   # class 7
    cams[0, 2, 0], cams[1, 2, 0] = 0.6, 0.8  # both: the stronger class wins
    image = np.zeros((4, 4, 3), np.uint8)
    labels = relation_labels(image, cams, np.array([3, 7]), fg_threshold=0.30, bg_threshold=0.05, crf=_no_crf)
    expected = np.array([
        [3, 3, 255, 0],
        [7, 255, 0, 0],
        [7, 0, 0, 0],
        [0, 0, 0, 0],
    ], np.uint8)
    np.testing.assert_array_equal(labels, expected)


def test_relation_labels_with_the_label_crf_keep_a_clear_object():
    image = np.full((40, 40, 3), 40, np.uint8)
    image[10:30, 10:30] = 220
    cams = np.zeros((1, 40, 40), np.float32)
    cams[0, 10:30, 10:30] = 0.9
    cams[0, 8:10, 10:30] = 0.2  # a weak halo: ignored before and after the CRF
    labels = relation_labels(image, cams, np.array([5]))
    assert (labels[12:28, 12:28] == 5).all()
    assert (labels[:5] == 0).all() and (labels[35:] == 0).all()
    assert set(np.unique(labels)) <= {0, 5, 255}


def test_relation_labels_reject_bad_thresholds_and_shapes():
    image = np.zeros((4, 4, 3), np.uint8)
    cams = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(ConfigError, match="fg_threshold"):
        relation_labels(image, cams, np.array([1]), fg_threshold=0.05, bg_threshold=0.3, crf=_no_crf)
    with pytest.raises(DataError, match="K=2"):
        relation_labels(image, cams, np.array([1, 2]), crf=_no_crf)
    assert (relation_labels(image, cams[:0], np.array([], np.int64)) == 0).all()


# ---------------------------------------------------------------- path-max affinities


def test_path_cells_follow_the_straight_line():
    cells = dict(zip(map(tuple, radius_offsets(5).tolist()), path_cells(5)))
    assert sorted(cells[(0, 3)]) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert sorted(cells[(2, 0)]) == [(0, 0), (1, 0), (2, 0)]
    assert sorted(cells[(1, 1)]) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert sorted(cells[(2, 2)]) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert all((0, 0) in c and o in c for o, c in cells.items())


@pytest.mark.parametrize("pair_set", ["psa", "full"])
def test_boundary_affinities_are_the_path_maximum_in_pair_order(pair_set):
    gen = torch.Generator().manual_seed(0)
    boundary = torch.rand(6, 8, generator=gen)
    radius = 4
    table = dict(zip(map(tuple, radius_offsets(radius).tolist()), path_cells(radius)))
    src, dst = pair_indices(6, 8, radius, pair_set=pair_set)
    assert src.numel() > 0
    expected = []
    for s, d in zip(src.tolist(), dst.tolist()):
        (sy, sx), (ty, tx) = divmod(s, 8), divmod(d, 8)
        expected.append(1 - max(float(boundary[sy + py, sx + px]) for py, px in table[(ty - sy, tx - sx)]))
    torch.testing.assert_close(boundary_affinities(boundary, radius, pair_set), torch.tensor(expected))


def test_a_wall_cuts_affinity_across_it_and_not_along_it():
    h, w, wall = 9, 17, 8
    boundary = torch.zeros(h, w)
    boundary[:, wall] = 1.0  # a vertical wall
    aff = boundary_affinities(boundary, 5)
    src, dst = pair_indices(h, w, 5)
    sx, dx = src % w, dst % w
    across = ((sx < wall) & (dx > wall)) | ((sx > wall) & (dx < wall))
    same_side = ((sx < wall) & (dx < wall)) | ((sx > wall) & (dx > wall))
    assert across.any() and same_side.any()
    assert torch.all(aff[across] == 0.0)
    assert torch.all(aff[same_side] == 1.0)  # including pairs running parallel to the wall


# ---------------------------------------------------------------- the boundary branch


def test_boundary_net_shapes_and_frozen_backbone():
    model = BoundaryNet(build_backbone("tiny", 16), radius=3)
    logits = model(torch.rand(2, 3, 50, 70))
    assert logits.shape == (2, 1, 13, 18)
    boundary = model.boundary(torch.rand(3, 50, 70))
    assert boundary.shape == (13, 18) and float(boundary.min()) >= 0 and float(boundary.max()) <= 1
    model.train()
    assert model.training and not model.backbone.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    trained = {id(p) for g in model.param_groups(0.1) for p in g["params"]}
    assert trained.isdisjoint(id(p) for p in model.backbone.parameters())
    assert model.param_groups(0.1, 2.0)[0]["lr"] == pytest.approx(0.2)


def _relation_batch(batch=4, size=48, seed=0):
    """Grey images with one bright square of class 1 on a dark ground; labels with a ring of ignore."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.full((batch, 3, size, size), 0.2)
    labels = torch.zeros(batch, size, size, dtype=torch.long)
    for i in range(batch):
        side = size // 2
        y, x = torch.randint(2, size - side - 2, (2,), generator=gen).tolist()
        images[i, :, y : y + side, x : x + side] = 0.9
        labels[i, y - 2 : y + side + 2, x - 2 : x + side + 2] = 255
        labels[i, y : y + side, x : x + side] = 1
    return images, labels


def test_short_irn_training_lowers_its_loss():
    from pipeline.engine.epochs import train_method

    torch.manual_seed(0)
    model = BoundaryNet(build_backbone("tiny", 16), radius=5)
    images, labels = _relation_batch()
    with torch.no_grad():
        before = model.eval().training_step(images, labels)
    history = train_method(model, [(images, labels)] * 4, epochs=6, lr=0.1, weight_decay=1e-4,
                           head_lr_mult=1.0, amp=False)
    with torch.no_grad():
        after = model.eval().training_step(images, labels)
    assert history[-1]["loss"] < history[0]["loss"]
    assert float(after["loss"]) < 0.8 * float(before["loss"])
    assert float(after["neg"]) < float(before["neg"])  # the boundary rose between square and ground


def test_training_step_rejects_mismatched_labels():
    model = BoundaryNet(build_backbone("tiny", 16), radius=3)
    with pytest.raises(DataError, match="relation labels"):
        model.training_step(torch.rand(2, 3, 32, 32), torch.zeros(2, 16, 16, dtype=torch.long))


# ---------------------------------------------------------------- the boundary random walk


def _box_boundary(h=16, w=16):
    boundary = torch.zeros(h, w)
    boundary[3, 3:12] = boundary[11, 3:12] = 1.0
    boundary[3:12, 3] = boundary[3:12, 11] = 1.0  # a closed box: cells 4..10 inside
    return boundary


def test_transition_rows_sum_to_one():
    transition = boundary_transition(torch.rand(10, 12), radius=5, beta=10.0)
    rows = transition.to_dense().sum(dim=1)
    torch.testing.assert_close(rows, torch.ones(120))


def test_walk_stays_in_a_walled_region_and_fills_it():
    boundary = _box_boundary()
    cams = np.zeros((1, 64, 64), np.float32)
    cams[0, 18:26, 18:26] = 1.0  # one corner of the box interior (cells 4..6)
    labels, scores = propagate_boundary(cams, np.array([4]), boundary, beta=10.0, exp_times=6, radius=5,
                                        bg_threshold=0.25)
    assert scores.shape == (2, 64, 64) and labels.shape == (64, 64)
    np.testing.assert_allclose(scores[0], 0.25)
    assert scores[1].max() == pytest.approx(1.0, abs=1e-3)  # divided by its maximum
    inside = labels[4 * 4 + 2 : 4 * 11 - 2, 4 * 4 + 2 : 4 * 11 - 2]
    assert (inside == 4).all()  # spread over the whole walled region
    assert scores[1][:8].max() < 1e-6 and scores[1][:, 52:].max() < 1e-6  # nothing leaks past the wall
    assert set(np.unique(labels)) == {0, 4}


def test_walk_without_labelled_classes_is_background():
    labels, scores = propagate_boundary(np.zeros((0, 8, 8), np.float32), np.array([], np.int64),
                                        torch.zeros(2, 2))
    assert (labels == 0).all() and scores.shape == (1, 8, 8)


def test_walk_rejects_bad_parameters():
    cams = np.zeros((1, 8, 8), np.float32)
    with pytest.raises(ConfigError, match="bg_threshold"):
        propagate_boundary(cams, np.array([1]), torch.zeros(2, 2), bg_threshold=1.5)
    with pytest.raises(ConfigError, match="exp_times"):
        propagate_boundary(cams, np.array([1]), torch.zeros(2, 2), exp_times=-1)
    with pytest.raises(DataError, match="boundary"):
        propagate_boundary(cams, np.array([1]), torch.zeros(1, 2, 2))


def test_relation_thresholds_are_irns_at_irns_cam_threshold_and_move_with_ours():
    from pipeline.propagation.irn.labels import calibrated_thresholds

    assert calibrated_thresholds(0.15) == pytest.approx((0.30, 0.05))
    fg, bg = calibrated_thresholds(0.47)
    assert fg == pytest.approx(0.619, abs=1e-3) and bg == pytest.approx(0.304, abs=1e-3)
    assert bg < 0.47 < fg  # confident background below the best cut, confident foreground above it
    lower, higher = calibrated_thresholds(0.3), calibrated_thresholds(0.6)
    assert lower[0] < higher[0] and lower[1] < higher[1]
    with pytest.raises(ConfigError, match="propagation.irn.labels"):
        calibrated_thresholds(1.0)


def test_relation_thresholds_are_both_auto_or_both_numbers():
    from stages.config import load_params

    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    with pytest.raises(ConfigError, match="propagation.irn.labels"):
        load_params(repo / "params.yaml", ["propagation.irn.labels.fg_threshold=0.4"])
    params = load_params(repo / "params.yaml", ["propagation.irn.labels.fg_threshold=0.4", "propagation.irn.labels.bg_threshold=0.1"])
    assert (params.propagation["irn"].labels.fg_threshold, params.propagation["irn"].labels.bg_threshold) == (0.4, 0.1)


@pytest.mark.parametrize("height,width", [(30, 45), (92, 124), (17, 21)])
def test_walk_read_out_is_irns_at_any_image_size(height, width):
    """IRN's make_sem_seg_labels: the stride-4 start (each 4 x 4 cell's mean, partial cells over their
    pixels, / (max + 1e-5), times 1 - boundary), walked, upsampled x4 (scale_factor 4), cropped top-left,
    divided by the overall maximum, the constant background first."""
    gen = torch.Generator().manual_seed(height)
    h, w = -(-height // 4), -(-width // 4)
    cams = torch.rand(2, height, width, generator=gen).numpy()
    boundary = torch.rand(h, w, generator=gen) * 0.8
    start = np.zeros((2, h, w), np.float32)
    for y in range(h):
        for x in range(w):
            start[:, y, x] = cams[:, 4 * y : 4 * y + 4, 4 * x : 4 * x + 4].mean(axis=(1, 2))
    start /= start.max(axis=(1, 2), keepdims=True) + 1e-5
    walked = random_walk(torch.from_numpy(start) * (1 - boundary), boundary_transition(boundary), 3)
    up = torch.nn.functional.interpolate(walked[None], scale_factor=4, mode="bilinear", align_corners=False)
    up = up[0, :, :height, :width]
    expected = torch.cat([torch.full((1, height, width), 0.25), up / up.max()]).numpy()
    labels, scores = propagate_boundary(cams, np.array([3, 7]), boundary, exp_times=3)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    np.testing.assert_array_equal(labels, np.array([0, 3, 7])[expected.argmax(axis=0)])
    with pytest.raises(DataError, match="stride-4 grid"):
        propagate_boundary(cams, np.array([3, 7]), boundary[:-1])
