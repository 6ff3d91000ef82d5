"""The pair sets of pipeline.propagation.pairs against direct implementations of the authors' rules, at many sizes
and radii (PSA tool/pyutils.py get_indices_of_pairs; IRN misc/indexing.py PathIndex and propagate_to_edge,
as ../shared/conformance/README.md describes them)."""
from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

from pipeline.propagation.pairs import PAIR_SETS, pair_affinities, pair_indices, radius_offsets
from pipeline.propagation.irn.network import boundary_affinities
from pipeline.errors import ConfigError
from pipeline.propagation.irn.walk import boundary_transition
from pipeline.propagation.sparse_walk import transition_matrix

SIZES = [(2, 3, 3), (2, 1, 5), (3, 4, 4), (3, 3, 5), (4, 6, 9), (5, 12, 16), (5, 24, 24), (5, 5, 9), (5, 4, 9),
         (5, 5, 8), (5, 13, 10), (6, 11, 20), (7, 9, 14), (10, 23, 31), (10, 32, 32)]

SMALL = [size for size in SIZES if size[1] * size[2] <= 300] + [(10, 11, 21)]  # for pair-by-pair loops


def psa_offsets(radius: int) -> list[tuple[int, int]]:
    """(0, 1)..(0, r - 1), then dy = 1..r - 1 with dx = -(r - 1)..r - 1, within the open disc."""
    offsets = [(0, dx) for dx in range(1, radius)]
    offsets += [(dy, dx) for dy in range(1, radius) for dx in range(-radius + 1, radius)
                if dy * dy + dx * dx < radius ** 2]
    return offsets


def psa_pairs(h: int, w: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Sources y <= h - radius, radius - 1 <= x <= w - radius (row-major); destinations offset-major."""
    sources = [(y, x) for y in range(h) for x in range(w) if y <= h - radius and radius - 1 <= x <= w - radius]
    src = [y * w + x for _ in psa_offsets(radius) for y, x in sources]
    dst = [(y + dy) * w + x + dx for dy, dx in psa_offsets(radius) for y, x in sources]
    return np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64)


def path(dy: int, dx: int) -> list[tuple[int, int]]:
    """IRN's path cells: the box spanned by both ends, squared distance to their line below 1."""
    return [(y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)
            if (dy * x - dx * y) ** 2 / (dy * dy + dx * dx) < 1]


@pytest.mark.parametrize("radius", range(2, 11))
def test_offsets_are_psas_in_its_order(radius):
    assert [tuple(o) for o in radius_offsets(radius).tolist()] == psa_offsets(radius)


@pytest.mark.parametrize("radius,h,w", SIZES)
def test_psa_pair_set_is_get_indices_of_pairs_in_its_order(radius, h, w):
    src, dst = pair_indices(h, w, radius)
    expected_src, expected_dst = psa_pairs(h, w, radius)
    np.testing.assert_array_equal(src.numpy(), expected_src)
    np.testing.assert_array_equal(dst.numpy(), expected_dst)


@pytest.mark.parametrize("radius,h,w", SIZES)
def test_full_pair_set_holds_psas_and_every_in_bounds_pair(radius, h, w):
    src, dst = pair_indices(h, w, radius, pair_set="full")
    ours = set(zip(src.tolist(), dst.tolist()))
    assert len(ours) == src.numel()
    assert set(zip(*(a.tolist() for a in psa_pairs(h, w, radius)))) <= ours
    cells = [(y, x) for y in range(h) for x in range(w)]
    expected = {(y * w + x, (y + dy) * w + x + dx) for y, x in cells for dy, dx in psa_offsets(radius)
                if 0 <= y + dy < h and 0 <= x + dx < w}
    assert ours == expected


@pytest.mark.parametrize("radius,h,w", SMALL)
@pytest.mark.parametrize("pair_set", PAIR_SETS)
def test_affinities_follow_the_pair_order(radius, h, w, pair_set):
    gen = torch.Generator().manual_seed(radius * 100 + h)
    features = torch.rand(3, h, w, generator=gen)
    boundary = torch.rand(h, w, generator=gen)
    src, dst = pair_indices(h, w, radius, pair_set=pair_set)
    flat = features.flatten(-2)
    expected = torch.exp(-(flat[:, src] - flat[:, dst]).abs().mean(dim=0))
    torch.testing.assert_close(pair_affinities(features, radius, pair_set), expected)
    maxima = []
    for s, d in zip(src.tolist(), dst.tolist()):
        (sy, sx), (ty, tx) = divmod(s, w), divmod(d, w)
        maxima.append(max(float(boundary[sy + y, sx + x]) for y, x in path(ty - sy, tx - sx)))
    torch.testing.assert_close(boundary_affinities(boundary, radius, pair_set), 1 - torch.tensor(maxima))


@pytest.mark.parametrize("radius,h,w", [(5, 12, 16), (5, 5, 9), (4, 7, 6), (3, 6, 10)])
def test_psa_transition_is_its_dense_matrix_transposed(radius, h, w):
    """PSA's walk: A = aff^beta on its pairs (both directions) + I, divided by the column sums."""
    features = torch.rand(4, h, w, generator=torch.Generator().manual_seed(h * w))
    aff = pair_affinities(features, radius)
    src, dst = psa_pairs(h, w, radius)
    dense = np.eye(h * w)
    dense[src, dst] = dense[dst, src] = aff.double().numpy() ** 8
    expected = dense / dense.sum(axis=0, keepdims=True)
    got = transition_matrix(aff, h, w, radius, beta=8).to_dense().double().numpy()
    np.testing.assert_allclose(got.T, expected, atol=1e-6)


@pytest.mark.parametrize("radius,h,w", [(5, 23, 31), (5, 6, 7), (3, 4, 9), (4, 10, 3)])
def test_irn_walk_links_every_in_image_pair_as_its_padding_does(radius, h, w):
    """IRN's propagate_to_edge pads the boundary by radius cells of 1 left, right and below and takes the
    PSA-rule pairs of the padded grid; the in-image ones are exactly our full set, the others carry 0."""
    ph, pw = h + radius, w + 2 * radius
    src, dst = psa_pairs(ph, pw, radius)
    sy, sx, ty, tx = src // pw, src % pw - radius, dst // pw, dst % pw - radius
    inside = (sy < h) & (sx >= 0) & (sx < w) & (ty < h) & (tx >= 0) & (tx < w)
    irn = set(zip((sy * w + sx)[inside].tolist(), (ty * w + tx)[inside].tolist()))
    full = set(zip(*(a.tolist() for a in pair_indices(h, w, radius, pair_set="full"))))
    assert irn == full
    boundary = torch.rand(h, w, generator=torch.Generator().manual_seed(1)) * 0.5
    dense = boundary_transition(boundary, radius).to_dense()
    off = dense.clone().fill_diagonal_(0) > 0
    linked = set(zip(*(i.tolist() for i in torch.nonzero(off, as_tuple=True))))
    assert linked == full | {(b, a) for a, b in full}


def test_bad_pair_set_is_a_config_error_and_params_offer_the_registry():
    from pipeline.propagation.affinitynet.params import AffinityTrainParams as TrainAffParams
    from pipeline.propagation.irn.params import IrnTrainParams as TrainIrnParams

    with pytest.raises(ConfigError, match="pair_set"):
        pair_indices(4, 4, 2, pair_set="dense")
    for section in (TrainAffParams, TrainIrnParams):
        field = section.model_fields["pair_set"]
        assert typing.get_args(field.annotation) == PAIR_SETS and field.default == "psa"
