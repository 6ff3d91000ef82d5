"""PSA's and IRN's propagation against the authors' numbers (../shared/conformance, README.md there):
each test runs the project's functions at their default settings on a fixture's inputs."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.propagation.affinitynet.labels import confident_labels
from pipeline.propagation.affinitynet.walk import background_channel, propagate_cam
from pipeline.propagation.irn.labels import relation_labels
from pipeline.propagation.irn.network import boundary_affinities
from pipeline.propagation.irn.walk import boundary_transition, propagate_boundary
from pipeline.propagation.pairs import affinity_loss, pair_affinities, pair_indices, radius_offsets
from pipeline.propagation.pairs import pair_labels
from pipeline.propagation.sparse_walk import random_walk, transition_matrix
from pipeline.pseudo_masks.crf import dense_crf, dense_crf_labels

from ._fixtures import check, load


def authors_keys(src: np.ndarray, dst: np.ndarray, cells: int) -> np.ndarray:
    """Pair keys src * cells + dst of the authors' (directions, sources) layout, flattened like ``dst``."""
    src = np.broadcast_to(np.asarray(src).reshape(1, -1), np.asarray(dst).reshape(-1, len(src)).shape)
    return (src * cells + np.asarray(dst).reshape(src.shape)).ravel()


def aligned(keys: np.ndarray, our_src: torch.Tensor, our_dst: torch.Tensor, cells: int) -> np.ndarray:
    """Positions in our pair order of the authors' pairs ``keys``; asserts both pair sets are equal."""
    ours = (our_src * cells + our_dst).numpy()
    assert len(np.unique(ours)) == len(ours) and len(np.unique(keys)) == len(keys)
    assert np.array_equal(np.sort(ours), np.sort(keys)), (
        f"pair sets differ: {len(np.setdiff1d(keys, ours))} of the authors' pairs missing, "
        f"{len(np.setdiff1d(ours, keys))} extra")
    order = np.argsort(ours)
    return order[np.searchsorted(ours[order], keys)]


def loss_terms(terms: dict) -> np.ndarray:
    return np.array([float(terms[k]) for k in ("loss", "fg_pos", "bg_pos", "neg")])


# ---------------------------------------------------------------- PSA


def test_psa_crf_alpha4():
    f = load("psa_crf_alpha4")
    check("psa_crf_alpha4", "out_posterior", f["out_posterior"], dense_crf(f["in_image"], f["in_scores"]))


def test_psa_confident_labels():
    f = load("psa_confident_labels")
    stride = int(f["param_grid_stride"])
    labels = confident_labels(f["in_image"], f["in_cams"], f["in_keys"], fg_alpha=float(f["param_fg_alpha"]),
                              bg_alpha=float(f["param_bg_alpha"]), grid_stride=stride)
    check("psa_confident_labels", "out_grid_labels", f["out_grid_labels"], labels[::stride, ::stride])


def test_psa_pair_indices():
    f = load("psa_pair_indices")
    h, w, radius = int(f["param_h"]), int(f["param_w"]), int(f["param_radius"])
    src, dst = pair_indices(h, w, radius)
    n_from = len(f["out_indices_from"])
    assert len(radius_offsets(radius)) * n_from == len(f["out_indices_to"])
    # the authors' layout (directions, sources) is our offset-major order: equal position by position
    check("psa_pair_indices", "out_indices_from", f["out_indices_from"], src[:n_from])
    check("psa_pair_indices", "out_indices_to", f["out_indices_to"], dst)
    assert torch.equal(src.view(-1, n_from), src[:n_from].expand(len(radius_offsets(radius)), -1))


def test_psa_affinity():
    f = load("psa_affinity")
    features = torch.from_numpy(f["in_features"])
    h, w = features.shape[-2:]
    keys = authors_keys(f["out_indices_from"], f["out_indices_to"], h * w)
    at = aligned(keys, *pair_indices(h, w, int(f["param_radius"])), h * w)
    ours = pair_affinities(features, int(f["param_radius"])).numpy()
    check("psa_affinity", "out_affinity", f["out_affinity"], ours[at].reshape(f["out_affinity"].shape))


def test_psa_pair_labels_loss():
    f = load("psa_pair_labels_loss")
    radius = int(f["param_radius"])
    features = torch.from_numpy(f["in_features"])
    h, w = features.shape[-2:]
    src, dst = pair_indices(h, w, radius)
    at = aligned(authors_keys(f["out_indices_from"], f["out_indices_to"], h * w), src, dst, h * w)
    fg_pos, bg_pos, neg = pair_labels(torch.from_numpy(f["in_label_grid"]), src, dst)
    aff = pair_affinities(features, radius)
    shape = f["out_affinity"].shape
    for name, mask in (("out_fg_pos", fg_pos), ("out_bg_pos", bg_pos), ("out_neg", neg)):
        check("psa_pair_labels_loss", name, f[name], mask.numpy()[at].reshape(shape).astype(np.float32))
    check("psa_pair_labels_loss", "out_affinity", f["out_affinity"], aff.numpy()[at].reshape(shape))
    terms = affinity_loss(aff, fg_pos, bg_pos, neg)  # on the project's own pairs: the same set, asserted above
    check("psa_pair_labels_loss", "out_loss_total_fg_bg_neg", f["out_loss_total_fg_bg_neg"], loss_terms(terms))


def test_psa_random_walk():
    f = load("psa_random_walk")
    cams, keys = f["in_cams"], f["in_keys"]
    features = torch.from_numpy(f["in_features"])
    h, w = features.shape[-2:]
    radius = int(f["param_radius"])
    assert int(f["param_grid_stride"]) == 8 and int(f["param_alpha"]) == 16
    check("psa_random_walk", "out_background", f["out_background"], background_channel(torch.from_numpy(cams))[0])
    transition = transition_matrix(pair_affinities(features, radius), h, w, radius, beta=float(f["param_beta"]))
    check("psa_random_walk", "out_transition_logt0", f["out_transition_logt0"], transition.to_dense().t())
    labels, scores = propagate_cam(cams, keys, features)  # defaults: alpha 16, beta 8, logt 8, radius 5, psa
    check("psa_random_walk", "out_scores", f["out_scores"], scores)
    check("psa_random_walk", "out_labels", f["out_labels"], labels)


# ---------------------------------------------------------------- IRN


def test_irn_crf_label():
    f = load("irn_crf_label")
    out = dense_crf_labels(f["in_image"], f["in_labels"], int(f["param_n_labels"]))
    check("irn_crf_label", "out_labels", f["out_labels"], out.astype(np.int64))


def test_irn_relation_labels():
    f = load("irn_relation_labels")
    assert (float(f["param_fg"]), float(f["param_bg"])) == (0.30, 0.05)
    check("irn_relation_labels", "out_labels", f["out_labels"],
          relation_labels(f["in_image"], f["in_cams"], f["in_keys"]))


def _irn_pairs(name: str, f: dict) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Our default pairs for the fixture's grid and radius, the authors' pairs' positions in them, after
    asserting that both sets (and the sources) are the same."""
    h, w = f["in_boundary"].shape
    src, dst = pair_indices(h, w, int(f["param_radius"]))
    check(name, "out_src_indices", f["out_src_indices"], np.unique(src.numpy()))
    at = aligned(authors_keys(f["out_src_indices"], f["out_dst_indices"], h * w), src, dst, h * w)
    # the destinations, in the authors' direction order, read back from our pairs
    check(name, "out_dst_indices", f["out_dst_indices"], dst.numpy()[at].reshape(f["out_dst_indices"].shape))
    return src, dst, at


def test_irn_path_affinity_r5():
    f = load("irn_path_affinity_r5")
    _, _, at = _irn_pairs("irn_path_affinity_r5", f)
    aff = boundary_affinities(torch.from_numpy(f["in_boundary"]), int(f["param_radius"])).numpy()
    check("irn_path_affinity_r5", "out_affinity", f["out_affinity"], aff[at].reshape(f["out_affinity"].shape))


def test_irn_affinity_loss():
    f = load("irn_affinity_loss")
    src, dst, at = _irn_pairs("irn_affinity_loss", f)
    aff = boundary_affinities(torch.from_numpy(f["in_boundary"]), int(f["param_radius"]))
    fg_pos, bg_pos, neg = pair_labels(torch.from_numpy(f["in_label_grid"]), src, dst)
    shape = f["out_affinity"].shape
    for name, mask in (("out_fg_pos", fg_pos), ("out_bg_pos", bg_pos), ("out_neg", neg)):
        check("irn_affinity_loss", name, f[name], mask.numpy()[at].reshape(shape).astype(np.float32))
    check("irn_affinity_loss", "out_affinity", f["out_affinity"], aff.numpy()[at].reshape(shape))
    terms = affinity_loss(aff, fg_pos, bg_pos, neg)
    check("irn_affinity_loss", "out_loss_total_fg_bg_neg", f["out_loss_total_fg_bg_neg"], loss_terms(terms))


def test_irn_random_walk():
    f = load("irn_random_walk")
    boundary = torch.from_numpy(f["in_boundary"])
    assert (int(f["param_radius"]), int(f["param_beta"]), int(f["param_exp_times"])) == (5, 10, 8)
    assert float(f["param_bg_threshold"]) == 0.25
    transition = boundary_transition(boundary)
    check("irn_random_walk", "out_transition_exp0", f["out_transition_exp0"], transition.to_dense().t())
    walked = random_walk(torch.from_numpy(f["in_start"]) * (1 - boundary), transition, int(f["param_exp_times"]))
    check("irn_random_walk", "out_rw", f["out_rw"], walked)
    labels, scores = propagate_boundary(f["in_cams"], f["in_keys"], boundary)
    check("irn_random_walk", "out_scores", f["out_scores"], scores)
    check("irn_random_walk", "out_labels", f["out_labels"], labels)
