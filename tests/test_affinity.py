import itertools
import math

import numpy as np
import pytest
import torch

from pipeline.propagation.affinitynet.network import AffinityNet

from pipeline.errors import ConfigError, DataError
from pipeline.models.backbones.tiny import TinyBackbone
from pipeline.propagation.affinitynet.labels import IGNORE, cell_average, combine_confident, confident_labels
from pipeline.propagation.pairs import affinity_loss, pair_affinities, pair_indices, radius_offsets
from pipeline.propagation.pairs import downsample_labels, pair_labels


def brute_force_pairs(h, w, radius):
    cells = [(y, x) for y in range(h) for x in range(w)]
    pairs = set()
    for (y1, x1), (y2, x2) in itertools.combinations(cells, 2):
        if (y1 - y2) ** 2 + (x1 - x2) ** 2 < radius**2:
            pairs.add(frozenset((y1 * w + x1, y2 * w + x2)))
    return pairs


# ---------------------------------------------------------------- pair indexing


def test_radius_offsets_is_a_half_disc_of_psa_size():
    offsets = radius_offsets(5)
    assert offsets.shape == (34, 2)  # PSA's 34 paths for radius 5
    dy, dx = offsets[:, 0], offsets[:, 1]
    assert bool(((dy > 0) | ((dy == 0) & (dx > 0))).all())
    assert bool((dy * dy + dx * dx < 25).all())
    both = {tuple(o) for o in offsets.tolist()} | {(-a, -b) for a, b in offsets.tolist()}
    disc = {(a, b) for a in range(-5, 6) for b in range(-5, 6) if 0 < a * a + b * b < 25}
    assert both == disc and len(both) == 2 * len(offsets)


@pytest.mark.parametrize("h,w,radius", [(1, 1, 2), (1, 7, 3), (6, 1, 3), (4, 5, 2), (5, 4, 3), (7, 9, 5), (3, 12, 5)])
def test_full_pair_indices_match_brute_force(h, w, radius):
    src, dst = pair_indices(h, w, radius, pair_set="full")
    assert src.dtype == dst.dtype == torch.int64 and src.shape == dst.shape
    got = [frozenset(p) for p in zip(src.tolist(), dst.tolist())]
    assert all(len(p) == 2 for p in got)  # no self pairs
    assert len(got) == len(set(got))  # each unordered pair once
    assert set(got) == brute_force_pairs(h, w, radius)


def test_pairs_never_wrap_across_rows():
    h, w = 6, 8
    src, dst = pair_indices(h, w, 4)
    dx = (dst % w) - (src % w)
    dy = (dst // w) - (src // w)
    assert bool((dx * dx + dy * dy < 16).all())


def test_bad_radius_is_a_config_error():
    for radius in (0, 1, 2.5, True):
        with pytest.raises(ConfigError, match="radius"):
            radius_offsets(radius)


@pytest.mark.parametrize("pair_set", ["psa", "full"])
def test_pair_affinities_match_gathered_definition(pair_set):
    torch.manual_seed(0)
    features = torch.randn(2, 6, 9, 11)
    src, dst = pair_indices(9, 11, 5, pair_set=pair_set)
    assert src.numel() > 0
    flat = features.flatten(-2)
    expected = torch.exp(-(flat[..., src] - flat[..., dst]).abs().mean(dim=-2))
    got = pair_affinities(features, 5, pair_set)
    assert got.shape == (2, src.numel())
    torch.testing.assert_close(got, expected)
    assert bool(((got > 0) & (got <= 1)).all())
    assert bool((pair_affinities(torch.ones(3, 4, 4), 3) == 1).all())


def test_pair_affinities_are_float32_under_low_precision():
    features = torch.randn(1, 4, 5, 5).to(torch.bfloat16)
    assert pair_affinities(features, 3).dtype == torch.float32


# ---------------------------------------------------------------- affinity labels


def identity_crf(image, scores):
    return scores


def test_confident_labels_known_answer_with_identity_crf():
    # Column k of the image holds cam value v[k]; bg scores (1-v)^4 and (1-v)^32 decide:
    # v=0.9: both fg -> class; v=0.1: low alpha says bg (0.656 > 0.1), high says fg (0.034 < 0.1) -> ignore;
    # v=0.01: both bg -> 0.
    values = np.array([0.9, 0.1, 0.01], dtype=np.float32)
    cams = np.tile(values, (1, 2, 1))
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    labels = confident_labels(image, cams, np.array([7]), crf=identity_crf, grid_stride=1)
    assert labels.dtype == np.uint8 and labels.shape == (2, 3)
    np.testing.assert_array_equal(labels, [[7, IGNORE, 0], [7, IGNORE, 0]])


def test_confident_labels_picks_the_stronger_class_and_calls_the_crf_twice():
    cams = np.zeros((2, 2, 2), dtype=np.float32)
    cams[0, 0, :] = 0.95
    cams[1, 1, :] = 0.95
    cams[1, 0, :] = 0.5
    calls = []

    def recording_crf(image, scores):
        calls.append(scores.shape)
        return scores

    labels = confident_labels(np.zeros((2, 2, 3), np.uint8), cams, np.array([3, 12]), crf=recording_crf,
                              grid_stride=1)
    np.testing.assert_array_equal(labels, [[3, 3], [12, 12]])
    assert calls == [(3, 2, 2), (3, 2, 2)]


def test_combine_confident_follows_psa_rule():
    # cells: (low fg 1, high fg 1) -> 1; (low fg 1, high fg 2) -> low's class 1; (low fg 2, high bg) -> 0;
    # (low bg, high fg 1) -> ignore; (low bg, high bg) -> 0; no score at all -> ignore
    low = np.array([[[0, 0, 0, 1, 1, 0]], [[1, 1, 0, 0, 0, 0]], [[0, 0, 1, 0, 0, 0]]], np.float32)
    high = np.array([[[0, 0, 1, 0, 1, 0]], [[1, 0, 0, 1, 0, 0]], [[0, 1, 0, 0, 0, 0]]], np.float32)
    labels = combine_confident(low, high, np.array([4, 9]))
    assert labels.dtype == np.uint8
    assert labels.tolist() == [[4, 4, 0, IGNORE, 0, IGNORE]]


def test_cell_average_known_answer_with_padding():
    scores = np.arange(15, dtype=np.float32).reshape(1, 3, 5)  # rows [0..4], [5..9], [10..14]
    cells = cell_average(scores, 2)  # padded with zeros to 4 x 6
    assert cells.shape == (1, 2, 3)
    np.testing.assert_allclose(cells[0], [[(0 + 1 + 5 + 6) / 4, (2 + 3 + 7 + 8) / 4, (4 + 9) / 4],
                                          [(10 + 11) / 4, (12 + 13) / 4, 14 / 4]])
    with pytest.raises(ConfigError, match="grid_stride"):
        cell_average(scores, 0)


def test_confident_labels_average_scores_over_each_cell_before_the_argmax():
    # First 4 x 4 cell: a quarter of the pixels hold 0.9, the rest 0.3. Averaged low-alpha scores:
    # bg 0.25 * 0.1^4 + 0.75 * 0.7^4 = 0.180 < fg 0.25 * 0.9 + 0.75 * 0.3 = 0.45; high-alpha bg ~ 0 -> class.
    cams = np.full((1, 4, 8), 0.3, np.float32)
    cams[0, 2:, 2:4] = 0.9
    cams[0, :, 4:] = 0.02  # second cell: background in both maps
    labels = confident_labels(np.zeros((4, 8, 3), np.uint8), cams, np.array([6]), crf=identity_crf,
                              grid_stride=4)
    assert labels.shape == (4, 8)
    assert (labels[:, :4] == 6).all() and (labels[:, 4:] == 0).all()
    # a cell where the low-alpha average is background though a quarter of its pixels are confident
    # foreground: the whole cell is ignored, where per-pixel labels would keep the quarter
    cams = np.full((1, 4, 4), 0.05, np.float32)
    cams[0, :2, :2] = 0.9
    per_cell = confident_labels(np.zeros((4, 4, 3), np.uint8), cams, np.array([6]), crf=identity_crf,
                                grid_stride=4)
    per_pixel = confident_labels(np.zeros((4, 4, 3), np.uint8), cams, np.array([6]), crf=identity_crf,
                                 grid_stride=1)
    assert (per_cell == IGNORE).all()
    assert (per_pixel[:2, :2] == 6).all() and (per_pixel[2:, 2:] == 0).all()


def test_confident_labels_blocks_are_cropped_to_the_image():
    cams = np.zeros((1, 5, 7), np.float32)
    cams[0, :, :4] = 0.9
    labels = confident_labels(np.zeros((5, 7, 3), np.uint8), cams, np.array([2]), crf=identity_crf,
                              grid_stride=4)
    assert labels.shape == (5, 7)
    assert (labels[:, :4] == 2).all() and (labels[:, 4:] == 0).all()


def test_confident_labels_without_classes_is_background():
    labels = confident_labels(np.zeros((3, 4, 3), np.uint8), np.zeros((0, 3, 4), np.float32), np.array([]),
                              crf=identity_crf)
    assert labels.shape == (3, 4) and not labels.any()


def test_confident_labels_rejects_bad_input():
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(DataError, match="image"):
        confident_labels(np.zeros((4, 5, 3), np.uint8), np.zeros((1, 4, 4)), [1], crf=identity_crf)
    with pytest.raises(DataError, match="keys"):
        confident_labels(image, np.zeros((2, 4, 4)), [1], crf=identity_crf)
    with pytest.raises(ConfigError, match="alpha"):
        confident_labels(image, np.zeros((1, 4, 4)), [1], fg_alpha=32, bg_alpha=4, crf=identity_crf)


def test_confident_labels_with_the_dense_crf():
    pytest.importorskip("pipeline.pseudo_masks.crf")
    image = np.full((40, 40, 3), 30, np.uint8)
    image[10:30, 10:30] = (220, 60, 40)
    cams = np.zeros((1, 40, 40), np.float32)
    cams[0, 12:28, 12:28] = 1.0
    labels = confident_labels(image, cams, np.array([15]))
    assert set(np.unique(labels)) <= {0, 15, IGNORE}
    assert labels[20, 20] == 15 and labels[2, 2] == 0


def test_downsample_labels_samples_cell_centres():
    labels = torch.arange(64).view(8, 8)
    small = downsample_labels(labels, (2, 4))
    # rows at (i + 0.5) * 4 -> 2, 6; cols at (j + 0.5) * 2 -> 1, 3, 5, 7
    assert small.tolist() == [[17, 19, 21, 23], [49, 51, 53, 55]]
    assert downsample_labels(np.zeros((2, 5, 5), np.uint8), (3, 3)).shape == (2, 3, 3)


def test_pair_labels_hand_made_counts():
    label_map = torch.tensor([[1, 1, 0], [2, 0, IGNORE]])
    src, dst = pair_indices(2, 3, 2, pair_set="full")
    fg_pos, bg_pos, neg = pair_labels(label_map, src, dst)
    assert src.numel() == 11
    assert (int(fg_pos.sum()), int(bg_pos.sum()), int(neg.sum())) == (1, 1, 6)
    assert not bool((fg_pos & bg_pos).any() or (fg_pos & neg).any() or (bg_pos & neg).any())


def test_pair_labels_match_brute_force_on_a_batch():
    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.choice([0, 1, 2, IGNORE], size=(2, 6, 7)))
    src, dst = pair_indices(6, 7, 3)
    fg_pos, bg_pos, neg = pair_labels(maps, src, dst)
    assert fg_pos.shape == (2, src.numel())
    for b in range(2):
        flat = maps[b].flatten().tolist()
        for p, (i, j) in enumerate(zip(src.tolist(), dst.tolist())):
            a, c = flat[i], flat[j]
            sure = a != IGNORE and c != IGNORE
            assert bool(fg_pos[b, p]) == (sure and a == c and a != 0)
            assert bool(bg_pos[b, p]) == (sure and a == c == 0)
            assert bool(neg[b, p]) == (sure and a != c)


# ---------------------------------------------------------------- loss


def test_affinity_loss_known_terms():
    aff = torch.tensor([0.5, 0.25, 0.9, 0.1, 0.8])
    fg = torch.tensor([True, True, False, False, False])
    bg = torch.tensor([False, False, True, False, False])
    neg = torch.tensor([False, False, False, True, True])
    terms = affinity_loss(aff, fg, bg, neg)
    def cost(x):  # PSA's -log(x + 1e-5)
        return -math.log(x + 1e-5)

    fg_expected = (cost(0.5) + cost(0.25)) / 2
    bg_expected = cost(0.9)
    neg_expected = (cost(1 - 0.1) + cost(1 - 0.8)) / 2
    expected = fg_expected / 4 + bg_expected / 4 + neg_expected / 2
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_affinity_loss_guards_empty_sets_and_log_zero():
    aff = torch.tensor([0.0, 1.0], requires_grad=True)
    none = torch.zeros(2, dtype=torch.bool)
    terms = affinity_loss(aff, torch.tensor([True, False]), none, torch.tensor([False, True]))
    assert terms["bg_pos"].item() == 0.0
    # PSA's mean: sum(label * cost) / (sum(label) + 1e-5)
    assert torch.isfinite(terms["loss"]) and terms["fg_pos"].item() == pytest.approx(-math.log(1e-5) / (1 + 1e-5),
                                                                                     rel=1e-6)
    terms["loss"].backward()
    assert torch.isfinite(aff.grad).all()
    assert aff.grad[0] < 0 and aff.grad[1] > 0  # collapsed pairs are still pushed the right way
    empty = affinity_loss(torch.rand(3), *(torch.zeros(3, dtype=torch.bool),) * 3)
    assert empty["loss"].item() == 0.0
    with pytest.raises(DataError, match="shapes"):
        affinity_loss(torch.rand(3), none, none, none)


# ---------------------------------------------------------------- module


def make_net(**kwargs):
    torch.manual_seed(0)
    backbone = TinyBackbone(output_stride=8, width=8)
    return AffinityNet(backbone, reduce_channels=(8, 8, 16), embed_dim=24, **kwargs)


def test_affinity_net_shapes_and_grid():
    net = make_net(grid_stride=4)
    features = net(torch.rand(2, 3, 50, 37))
    assert features.shape == (2, 24, 13, 10)  # ceil(50 / 4), ceil(37 / 4)
    assert net.affinities(features).shape == (2, pair_indices(13, 10, 5)[0].numel())
    assert make_net()(torch.rand(1, 3, 64, 48)).shape == (1, 24, 8, 6)


def test_affinity_net_rejects_bad_config():
    with pytest.raises(ConfigError, match="stages"):
        make_net(stages=(-2, -1))
    with pytest.raises(ConfigError, match="stages"):
        AffinityNet(TinyBackbone(width=8), stages=(7,), reduce_channels=(8,))


def test_param_groups_split_backbone_and_new_layers():
    net = make_net()
    groups = net.param_groups(0.1)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == pytest.approx(0.1) and groups[1]["lr"] == pytest.approx(1.0)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))


def test_short_training_reduces_the_loss():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32) * 0.2
    images[:, 0, :, :16] += 0.8  # red object on the left, dark background on the right
    labels = torch.zeros(2, 32, 32, dtype=torch.uint8)
    labels[:, :, :14] = 4
    labels[:, :, 14:18] = IGNORE
    net = make_net(grid_stride=4, radius=3)  # PSA's pairs on the 8 x 8 grid need radius <= 4
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        terms = net.training_step(images, labels)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
    assert set(terms) == {"loss", "fg_pos", "bg_pos", "neg"}
    assert losses[-1] < 0.5 * losses[0]


def test_training_step_under_autocast_keeps_float32_loss():
    net = make_net(grid_stride=4, radius=3)
    labels = torch.zeros(1, 24, 24, dtype=torch.uint8)
    labels[:, :, :12] = 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = net.training_step(torch.rand(1, 3, 24, 24), labels)
    assert terms["loss"].dtype == torch.float32 and torch.isfinite(terms["loss"])
    with pytest.raises(DataError, match="labels"):
        net.training_step(torch.rand(1, 3, 24, 24), labels[:, :20])


def test_training_on_a_grid_without_pairs_is_a_config_error():
    net = make_net(grid_stride=4)  # radius 5: PSA's pairs need a grid of at least 5 x 9 cells
    labels = torch.zeros(1, 32, 32, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="propagation.affinitynet.train.crop_size"):
        net.training_step(torch.rand(1, 3, 32, 32), labels)
    assert make_net(grid_stride=4, pair_set="full").training_step(torch.rand(1, 3, 32, 32), labels)["loss"] >= 0
    with pytest.raises(ConfigError, match="pair_set"):
        make_net(pair_set="dense")
