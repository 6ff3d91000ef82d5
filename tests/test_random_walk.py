import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pipeline.affinity import pair_affinities, pair_indices, radius_offsets
from pipeline.errors import ConfigError, DataError
from pipeline.random_walk import background_channel, propagate_cam, random_walk, transition_matrix

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


def test_walk_never_crosses_a_zero_affinity_wall_and_fills_its_region():
    h, w, wall, radius = 12, 20, 9, 5
    aff = pair_affinities(walled_features(h, w, wall), radius)
    transition = transition_matrix(aff, h, w, radius, beta=8)
    seeds = torch.zeros(2, h, w)
    seeds[0, 5, 2] = 1.0  # class seeded in the left region
    seeds[1, 3, 15] = 1.0  # class seeded in the right region
    walked = random_walk(seeds, transition, logt=8)
    left, right = walked[..., :wall], walked[..., wall:]
    assert bool((left[1] == 0).all()) and bool((right[0] == 0).all())
    assert bool((left[0] > 0).all()) and bool((right[1] > 0).all())
    # after 256 steps the seed has spread out over its region (near the stationary distribution)
    assert left[0].min() > 0.5 * left[0].max() and right[1].min() > 0.5 * right[1].max()
    assert walked.shape == (2, h, w) and walked.dtype == torch.float32


def test_propagate_cam_keeps_classes_in_their_regions():
    height, width, stride = 48, 80, 4
    features = walled_features(height // stride, width // stride, wall=10)  # wall at pixel column 40
    cams = np.zeros((2, height, width), np.float32)
    cams[0, 4:44, 4:36] = 0.8
    cams[1, 8:40, 46:76] = 0.7
    labels, scores = propagate_cam(cams, np.array([5, 9]), features, bg_alpha=16, logt=6, radius=5)
    assert labels.shape == (height, width) and labels.dtype == np.uint8
    assert scores.shape == (3, height, width) and scores.dtype == np.float32
    margin = stride  # bilinear upsampling blends one cell across the wall
    assert set(np.unique(labels[:, : 40 - margin])) == {5}
    assert set(np.unique(labels[:, 40 + margin :])) == {9}


def test_propagate_cam_threshold_background_and_label_restriction():
    cams = np.zeros((1, 16, 16), np.float32)
    cams[0, :, :8] = 0.9
    features = torch.zeros(3, 4, 4)
    features[:, :, 2:] = 60.0
    labels, scores = propagate_cam(cams, [14], features, bg_alpha=None, bg_threshold=0.3, logt=3, radius=3)
    assert set(np.unique(labels)) == {0, 14}
    assert (labels[:, :6] == 14).all() and (labels[:, 10:] == 0).all()
    np.testing.assert_allclose(scores[0], 0.3, rtol=1e-5)  # a constant channel stays constant
    empty, _ = propagate_cam(np.zeros((0, 16, 16)), [], features, radius=3, logt=2, image_size=(20, 24))
    assert empty.shape == (20, 24) and not empty.any()


def test_background_channel_and_parameter_errors():
    cams = torch.tensor([[[0.5, 1.0]], [[0.25, 0.0]]])
    torch.testing.assert_close(background_channel(cams, bg_alpha=2), torch.tensor([[[0.25, 0.0]]]))
    with pytest.raises(ConfigError, match="exactly one"):
        background_channel(cams, bg_alpha=2, bg_threshold=0.2)
    with pytest.raises(ConfigError, match="logt"):
        random_walk(torch.zeros(1, 2, 2), transition_matrix(torch.ones(6), 2, 2, 2), logt=-1)
    with pytest.raises(DataError, match="cams"):
        propagate_cam(np.zeros((2, 8, 8)), [1], torch.zeros(2, 2, 2), radius=2)


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
