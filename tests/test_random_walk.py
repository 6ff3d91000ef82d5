from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pipeline.errors import ConfigError, DataError, WsssError
from pipeline.propagation.affinitynet.walk import background_channel, irn_background, propagate_cam
from pipeline.propagation.pairs import pair_affinities, pair_indices, radius_offsets
from pipeline.propagation.sparse_walk import (
    grid_to_image,
    input_fill,
    pad_to_stride,
    pool_to_grid,
    random_walk,
    transition_matrix,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def walled_features(h, w, wall):
    """Features 0 left of column ``wall`` and 60 from it on: cross-wall affinity exp(-60)^8 == 0."""
    features = torch.zeros(4, h, w)
    features[:, :, wall:] = 60.0
    return features


def test_transition_matrix_is_sparse_row_stochastic_and_bounded():
    h, w, radius = 9, 11, 5
    torch.manual_seed(0)
    aff = pair_affinities(torch.randn(8, h, w) * 0.3, radius)
    transition = transition_matrix(aff, h, w, radius, beta=8)
    n = h * w
    assert transition.layout == torch.sparse_csr and transition.shape == (n, n)
    assert transition.values().numel() <= n * (2 * len(radius_offsets(radius)) + 1)
    dense = transition.to_dense()  # small grid: fine to densify for checking
    torch.testing.assert_close(dense.sum(dim=1), torch.ones(n))
    # T = D^-1 A with A symmetric: D T is symmetric, and the diagonal of A is 1.
    degree = 1.0 / dense.diagonal()
    scaled = degree[:, None] * dense
    torch.testing.assert_close(scaled, scaled.t())
    src, dst = pair_indices(h, w, radius)
    torch.testing.assert_close(scaled[src, dst], aff.pow(8))


def test_transition_matrix_rejects_mismatched_affinities():
    with pytest.raises(DataError, match="affinities"):
        transition_matrix(torch.rand(5), 4, 4, 3)
    with pytest.raises(ConfigError, match="beta"):
        transition_matrix(torch.rand(pair_indices(4, 4, 3)[0].numel()), 4, 4, 3, beta=0)


@pytest.mark.parametrize("pair_set", ["psa", "full"])
def test_walk_never_crosses_a_zero_affinity_wall_and_fills_its_region(pair_set):
    h, w, wall, radius = 12, 20, 9, 5
    aff = pair_affinities(walled_features(h, w, wall), radius, pair_set)
    transition = transition_matrix(aff, h, w, radius, beta=8, pair_set=pair_set)
    seeds = torch.zeros(2, h, w)
    seeds[0, 5, 5] = 1.0  # class seeded in the left region
    seeds[1, 3, 15] = 1.0  # class seeded in the right region
    walked = random_walk(seeds, transition, logt=8)
    # cells in no pair (PSA's set: a few near the top corners) keep their own score, 0 here
    src, dst = pair_indices(h, w, radius, pair_set=pair_set)
    linked = torch.zeros(h * w, dtype=torch.bool)
    linked[src], linked[dst] = True, True
    linked = linked.view(h, w)
    assert bool(linked.all()) == (pair_set == "full")
    left, right = walked[..., :wall], walked[..., wall:]
    assert bool((left[1] == 0).all()) and bool((right[0] == 0).all())
    assert bool((left[0] > 0)[linked[:, :wall]].all()) and bool((right[1] > 0)[linked[:, wall:]].all())
    assert bool((walked[:, ~linked] == 0).all())
    # after 256 steps the seed has spread out over its region (near the stationary distribution)
    assert left[0][linked[:, :wall]].min() > 0.5 * left[0].max()
    assert right[1][linked[:, wall:]].min() > 0.5 * right[1].max()
    assert walked.shape == (2, h, w) and walked.dtype == torch.float32


def test_walk_keeps_probability_mass_per_cell():
    # T is row-stochastic (T 1 = 1), so per-cell class distributions stay distributions under the walk
    h, w, radius = 7, 9, 4
    torch.manual_seed(1)
    transition = transition_matrix(pair_affinities(torch.randn(6, h, w) * 0.5, radius), h, w, radius, beta=8)
    scores = torch.rand(3, h, w)
    scores = scores / scores.sum(dim=0, keepdim=True)
    walked = random_walk(scores, transition, logt=5)
    torch.testing.assert_close(walked.sum(dim=0), torch.ones(h, w))
    assert bool((walked >= 0).all())


@pytest.mark.parametrize("bg_mode", ["psa", "irn"])
@pytest.mark.parametrize("pair_set", ["psa", "full"])
def test_propagate_cam_keeps_classes_in_their_regions(bg_mode, pair_set):
    height, width, stride = 48, 80, 4
    features = walled_features(height // stride, width // stride, wall=10)  # wall at pixel column 40
    cams = np.zeros((2, height, width), np.float32)
    cams[0, 4:44, 4:36] = 0.8
    cams[1, 8:40, 46:76] = 0.7
    labels, scores = propagate_cam(cams, np.array([5, 9]), features, bg_alpha=16, logt=6, radius=5,
                                   bg_mode=bg_mode, pair_set=pair_set)
    assert labels.shape == (height, width) and labels.dtype == np.uint8
    assert scores.shape == (3, height, width) and scores.dtype == np.float32
    margin = stride  # bilinear upsampling blends one cell across the wall
    if pair_set == "full":
        assert set(np.unique(labels[:, : 40 - margin])) == {5}
        assert set(np.unique(labels[:, 40 + margin :])) == {9}
    else:  # PSA's corner cells, in no pair or linked one way only, keep much of their own score: background
        assert set(np.unique(labels[:, : 40 - margin])) == {0, 5} and (labels[:, : 40 - margin] == 5).mean() > 0.9
        assert set(np.unique(labels[:, 40 + margin :])) == {0, 9} and (labels[:, 40 + margin :] == 9).mean() > 0.9
        assert (labels[2 * stride : 9 * stride, : 40 - margin] == 5).all()
        assert (labels[2 * stride : 9 * stride, 40 + margin :] == 9).all()


@pytest.mark.parametrize("bg_mode", ["psa", "irn"])
def test_single_region_input_stays_in_its_region(bg_mode):
    # one class over most of the left region only, on an image that is not a multiple of the stride:
    # the right region stays background, the class keeps the left one
    height, width, stride = 30, 46, 4
    features = walled_features(-(-height // stride), -(-width // stride), wall=6)  # wall at pixel column 24
    cams = np.zeros((1, height, width), np.float32)
    cams[0, 2:28, 2:22] = 0.9
    labels, scores = propagate_cam(cams, np.array([3]), features, logt=8, radius=5, bg_mode=bg_mode,
                                   grid_stride=stride)
    assert labels.shape == (height, width)
    assert (labels[:, 24 + stride:] == 0).all()
    assert (scores[1, :, 24 + stride:] == 0).all()
    assert (labels[8:20, 6:18] == 3).all()


def test_irn_background_known_answer():
    # IRN divides by the one maximum over all classes and pixels (0.4), then prepends 0.25:
    # pixel 0: (0.25, 0.5, 0.2) -> class 1; pixel 1: (0.25, 1.0, 0.1) -> class 1;
    # pixel 2: (0.25, 0.0, 0.2) -> background, though class 2 is at its own maximum there
    walked = torch.tensor([[[0.2, 0.4, 0.0]], [[0.08, 0.04, 0.08]]])
    scores = irn_background(walked, 0.25)
    torch.testing.assert_close(scores, torch.tensor([[[0.25, 0.25, 0.25]], [[0.5, 1.0, 0.0]],
                                                     [[0.2, 0.1, 0.2]]]))
    assert scores.argmax(dim=0).tolist() == [[1, 1, 0]]
    torch.testing.assert_close(irn_background(torch.zeros(1, 1, 2), 0.3), torch.tensor([[[0.3, 0.3]], [[0.0, 0.0]]]))
    with pytest.raises(ConfigError, match="bg_threshold"):
        irn_background(walked, 1.5)


def isolated_cells(h, w):
    """Features whose cells all differ by >= 100: every affinity is 0, T is the identity."""
    return (torch.arange(h * w, dtype=torch.float32) * 100).view(1, h, w).expand(3, h, w)


def test_propagate_cam_irn_mode_known_answer():
    # T = I: uniform cams 0.6 / 0.09 -> divided by 0.6 -> 1.0 / 0.15; bg 0.25
    cams = np.stack([np.full((16, 16), 0.6), np.full((16, 16), 0.09)]).astype(np.float32)
    labels, scores = propagate_cam(cams, [4, 8], isolated_cells(4, 4), logt=3, radius=3, bg_mode="irn",
                                   bg_threshold=0.25)
    np.testing.assert_allclose(scores[:, 5, 5], [0.25, 1.0, 0.15], rtol=1e-5)
    assert (labels == 4).all()
    cams[0] = 0.1  # now 0.1 / 0.1 = 1.0 and 0.09 / 0.1 = 0.9: both above 0.25, class 4 still wins
    labels, _ = propagate_cam(cams, [4, 8], isolated_cells(4, 4), logt=3, radius=3, bg_mode="irn")
    assert (labels == 4).all()


def test_psa_mode_walks_the_power_background():
    # T = I: scores are the cam with (1 - max)^alpha, pooled and upsampled back
    cams = np.zeros((1, 16, 16), np.float32)
    cams[0, :, :8] = 0.5
    labels, scores = propagate_cam(cams, [14], isolated_cells(4, 4), bg_alpha=2, logt=3, radius=3)
    np.testing.assert_allclose(scores[:, 0, 0], [0.25, 0.5], rtol=1e-5)
    np.testing.assert_allclose(scores[:, 0, 15], [1.0, 0.0], atol=1e-6)
    assert (labels[:, :6] == 14).all() and (labels[:, 10:] == 0).all()
    empty, _ = propagate_cam(np.zeros((0, 16, 16)), [], torch.zeros(3, 4, 4), radius=3, logt=2,
                             image_size=(20, 24))
    assert empty.shape == (20, 24) and not empty.any()
    empty, _ = propagate_cam(np.zeros((0, 16, 16)), [], torch.zeros(3, 4, 4), radius=3, logt=2, bg_mode="irn")
    assert empty.shape == (16, 16) and not empty.any()


def test_padding_pooling_and_cropping_as_psa():
    scores = torch.arange(15, dtype=torch.float32).reshape(1, 3, 5)
    padded = pad_to_stride(scores, 2)
    assert padded.shape == (1, 4, 6) and padded[..., 3, :].abs().sum() == 0 and padded[..., :, 5].abs().sum() == 0
    grid = pool_to_grid(scores, 2)
    torch.testing.assert_close(grid[0], torch.tensor([[3.0, 5.0, 13 / 4], [21 / 4, 25 / 4, 14 / 4]]))
    assert grid_to_image(grid, 2, (3, 5)).shape == (1, 3, 5)
    image = torch.rand(3, 5, 7)
    filled = pad_to_stride(image, 4, torch.tensor([0.1, 0.2, 0.3]))
    assert filled.shape == (3, 8, 8)
    torch.testing.assert_close(filled[:, :5, :7], image)
    torch.testing.assert_close(filled[:, 7, 7], torch.tensor([0.1, 0.2, 0.3]))
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    fill = input_fill(lambda x: (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
    torch.testing.assert_close(fill, mean)
    torch.testing.assert_close(input_fill(lambda x: (x * 255.0 - 127.0) / 128.0), torch.full((3,), 127 / 255))


def test_background_channel_and_parameter_errors():
    cams = torch.tensor([[[0.5, 1.0]], [[0.25, 0.0]]])
    torch.testing.assert_close(background_channel(cams, bg_alpha=2), torch.tensor([[[0.25, 0.0]]]))
    with pytest.raises(ConfigError, match="bg_alpha"):
        background_channel(cams, bg_alpha=0)
    with pytest.raises(ConfigError, match="^logt"):
        random_walk(torch.zeros(1, 2, 2), transition_matrix(torch.ones(6), 2, 2, 2, pair_set="full"), logt=-1)
    with pytest.raises(DataError, match="cams"):
        propagate_cam(np.zeros((2, 8, 8)), [1], torch.zeros(2, 2, 2), radius=2)
    with pytest.raises(ConfigError, match="bg_mode"):
        propagate_cam(np.zeros((1, 8, 8)), [1], torch.zeros(2, 2, 2), radius=2, bg_mode="threshold")
    with pytest.raises(DataError, match="grid"):
        propagate_cam(np.zeros((1, 16, 16)), [1], torch.zeros(2, 3, 3), radius=2, grid_stride=4)


class LargestAllocation(TorchDispatchMode):
    """Records the largest number of elements any operator output holds (non-zeros for sparse outputs)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            if t.layout == torch.strided:
                size = t.numel()
            elif t.layout == torch.sparse_coo:
                size = t._nnz() * (t.sparse_dim() + 1)
            else:
                size = t.values().numel() + t.col_indices().numel() + t.crow_indices().numel()
            self.largest = max(self.largest, size)
        return out


def largest_allocation(image_hw, stride, radius=5, logt=3):
    height, width = image_hw
    h, w = -(-height // stride), -(-width // stride)
    torch.manual_seed(0)
    features = torch.randn(8, h, w) * 0.2
    cams = np.random.default_rng(0).random((2, height, width), dtype=np.float32)
    with LargestAllocation() as mode:
        propagate_cam(cams, [1, 2], features, radius=radius, logt=logt)
    return mode.largest, h * w


@pytest.mark.parametrize("stride", [8, 4])
def test_random_walk_memory_is_linear_in_pixels(stride):
    # 500 x 375 (VOC-sized): grid 63 x 47 at stride 8, 125 x 94 at stride 4; then twice the pixels.
    offsets = len(radius_offsets(5))
    largest, n = largest_allocation((500, 375), stride)
    largest_2x, n_2x = largest_allocation((707, 530), stride)
    # no operator output anywhere near N x N; the bound covers the COO index pairs of T and the
    # (1 + K, H, W) full-resolution scores
    assert largest <= max(3 * n * (2 * offsets + 1), 3 * 500 * 375)
    assert largest < n * n / 10
    assert largest_2x / largest < 2.5 and n_2x / n < 2.2


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("threshold", [0.13, 0.3, 0.47, 0.8])
def test_auto_alpha_puts_the_psa_background_on_the_cam_threshold(threshold):
    from pipeline.propagation.affinitynet.walk import alpha_for_threshold

    alpha = alpha_for_threshold(threshold)
    assert (1 - threshold) ** alpha == pytest.approx(threshold)
    cams = torch.tensor([[[threshold - 0.01, threshold + 0.01]]])
    background = background_channel(cams, alpha)[0, 0]
    assert background[0] > cams[0, 0, 0] and background[1] < cams[0, 0, 1]  # same cut as the threshold
    with pytest.raises(ConfigError, match="^bg_alpha: auto needs"):
        alpha_for_threshold(0.0)


def test_auto_background_is_calibrated_from_eval_cam(tmp_path):
    from pipeline.engine.atomic import write_json
    from stages.config import load_params
    from pipeline.propagation import get_propagation
    from stages.propagation import context

    def walk_background(p):
        settings, _ = get_propagation("affinitynet").walk_settings(p.propagation["affinitynet"], context(p, "walk"))
        return {k: v for k, v in settings.items() if k.startswith("bg_")}

    def params(*overrides):
        return load_params(REPO / "params.yaml", [f"paths.outputs={tmp_path}", *overrides])

    write_json(tmp_path / "eval_cam" / "cam" / "metrics.json", {"miou": 0.5, "best_threshold": 0.47})
    psa = walk_background(params("propagation.affinitynet.walk.bg_mode=psa", "propagation.affinitynet.walk.bg_alpha=auto"))
    assert psa["bg_mode"] == "psa" and 0.53 ** psa["bg_alpha"] == pytest.approx(0.47)
    assert walk_background(params("propagation.affinitynet.walk.bg_mode=irn", "propagation.affinitynet.walk.bg_threshold=auto")) == {"bg_mode": "irn", "bg_threshold": 0.47}
    assert walk_background(params("propagation.affinitynet.walk.bg_mode=psa", "propagation.affinitynet.walk.bg_alpha=16")) == {"bg_mode": "psa", "bg_alpha": 16.0}
    with pytest.raises(WsssError, match="eval-cam"):
        walk_background(params("propagation.affinitynet.walk.bg_mode=psa", "method=seam"))
