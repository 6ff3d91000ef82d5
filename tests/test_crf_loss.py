"""The single-stage losses: pCE, the dense-CRF loss against a brute-force N x N reference, DFR's kernel
and the feature-consistency loss."""
import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError, DataError
from pipeline.segmentation.losses import (
    DenseCRFLoss,
    deep_features,
    dense_crf_loss,
    feature_consistency_loss,
    gaussian_features,
    kernel_matrix,
    partial_cross_entropy,
)


def brute_force(probs, features, roi):
    """sum_k (m S_k)^T W (m - m S_k) / P^2 with the dense matrix W."""
    w = kernel_matrix(features)
    s = probs * roi[:, None]
    energy = torch.einsum("bkp,bpq,bkq->b", s, w, roi[:, None] - s)
    return energy / probs.shape[2] ** 2


def test_blockwise_value_and_gradient_match_the_dense_matrix():
    torch.manual_seed(0)
    b, k, h, w = 2, 3, 7, 9
    images = torch.rand(b, 3, h, w)
    features = gaussian_features(images, sigma_rgb=40.0, sigma_xy=3.0)
    roi = (torch.rand(b, h * w) > 0.2).float()
    logits = torch.randn(b, k, h * w, dtype=torch.float64)
    probs_a = logits.softmax(1).float().requires_grad_()
    probs_b = probs_a.detach().clone().requires_grad_()
    # a block of 2*63*5 elements: 5 rows at a time, so the rows are split unevenly over many blocks
    fast = dense_crf_loss(probs_a, features, roi, block_elements=2 * h * w * 5)
    slow = brute_force(probs_b, features, roi)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-7)
    weights = torch.tensor([0.7, 1.3])
    (fast * weights).sum().backward()
    (slow * weights).sum().backward()
    torch.testing.assert_close(probs_a.grad, probs_b.grad, rtol=1e-4, atol=1e-7)
    assert probs_a.grad[roi[:, None].expand_as(probs_a.grad) == 0].abs().max() == 0


def two_colour_image(size=16):
    image = torch.zeros(1, 3, size, size)
    image[..., size // 2 :] = 1.0          # black left half, white right half
    return image


def test_crf_loss_is_zero_along_the_edge_and_higher_across_it():
    image = two_colour_image()
    left = torch.zeros(16, 16, dtype=torch.long)
    left[:, 8:] = 1
    across = torch.zeros(16, 16, dtype=torch.long)
    across[8:] = 1                          # cuts both colour regions in half
    loss = DenseCRFLoss(weight=1.0, sigma_rgb=15.0, sigma_xy=100.0, scale=1.0)
    follows = loss(image, F.one_hot(left, 2).permute(2, 0, 1)[None].float())
    cuts = loss(image, F.one_hot(across, 2).permute(2, 0, 1)[None].float())
    assert follows.item() == pytest.approx(0.0, abs=1e-12)
    assert cuts.item() > 0.1


def test_scale_and_roi_follow_rloss():
    image = two_colour_image(16)
    probs = torch.rand(1, 2, 16, 16).softmax(1)
    half = DenseCRFLoss(weight=2.0, sigma_xy=100.0, scale=0.5)
    expected = 2.0 * dense_crf_loss(F.interpolate(probs, size=(8, 8), mode="bilinear", align_corners=False)
                                    .flatten(2), gaussian_features(image[..., ::2, ::2], 15.0, 50.0))
    torch.testing.assert_close(half(image, probs), expected[0])
    roi = torch.zeros(1, 16, 16)
    assert half(image, probs, roi).item() == 0.0


def test_dfr_kernel_equals_the_shallow_kernel_without_the_deep_term():
    torch.manual_seed(1)
    images, probs = torch.rand(2, 3, 8, 8), torch.rand(2, 4, 8, 8).softmax(1)
    loss = DenseCRFLoss(weight=1.0, scale=1.0)
    shallow = gaussian_features(images, 15.0, 100.0)
    constant = deep_features(torch.ones(2, 6, 2, 2), (8, 8), sigma_deep=0.5)
    torch.testing.assert_close(kernel_matrix(torch.cat([shallow, constant], 2)), kernel_matrix(shallow))
    torch.testing.assert_close(loss(images, probs, extra_features=constant), loss(images, probs))
    # embeddings that tell the halves apart cut the kernel between them and nowhere else
    split = torch.zeros(2, 2, 8, 8)
    split[:, 0, :, :4] = 1.0
    split[:, 1, :, 4:] = 1.0
    deep = kernel_matrix(torch.cat([shallow, deep_features(split, (8, 8), 0.5)], 2))
    base = kernel_matrix(shallow)
    assert torch.allclose(deep[:, 0, 1], base[:, 0, 1])           # same half
    # pixel 0 (left) vs 7 (right): orthonormal embeddings, |e_i - e_j|^2 / 2 sigma^2 = 2 / 0.5
    torch.testing.assert_close(deep[:, 0, 7], base[:, 0, 7] * torch.exp(torch.tensor(-4.0)))


def test_feature_consistency_loss_rewards_separated_embeddings():
    labels = torch.full((1, 8, 8), 255, dtype=torch.long)
    labels[0, 2, :3] = 0
    labels[0, 6, 5:] = 1
    mixed = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    separated = torch.zeros(1, 4, 8, 8)
    separated[0, 0, :4] = 1.0
    separated[0, 1, 4:] = 1.0
    good = feature_consistency_loss(separated, labels, sigma_deep=0.5)
    bad = feature_consistency_loss(mixed, labels, sigma_deep=0.5)
    assert good.item() < 0.01 < bad.item()
    trainable = mixed.clone().requires_grad_()
    feature_consistency_loss(trainable, labels, sigma_deep=0.5).backward()
    assert trainable.grad.abs().sum() > 0
    empty = torch.full((1, 8, 8), 255, dtype=torch.long)
    assert feature_consistency_loss(trainable, empty, 0.5).item() == 0.0


def test_pce_ignores_unlabelled_pixels():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 5, 5)
    target = torch.full((2, 5, 5), 255, dtype=torch.long)
    target[0, 1, 1], target[1, 3, 2], target[1, 0, 4] = 2, 0, 1
    expected = torch.stack([F.cross_entropy(logits[0, :, 1, 1][None], torch.tensor([2])),
                            F.cross_entropy(logits[1, :, 3, 2][None], torch.tensor([0])),
                            F.cross_entropy(logits[1, :, 0, 4][None], torch.tensor([1]))]).mean()
    torch.testing.assert_close(partial_cross_entropy(logits, target), expected)
    changed = logits.clone()
    changed[:, :, 2:3] += 50.0              # row 2 holds no labelled pixel
    torch.testing.assert_close(partial_cross_entropy(changed, target), expected)
    assert partial_cross_entropy(logits, torch.full((2, 5, 5), 255)).item() == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda: partial_cross_entropy(torch.zeros(1, 3, 4, 4), torch.full((1, 4, 4), 3)), "labels must lie"),
    (lambda: partial_cross_entropy(torch.zeros(1, 3, 4, 4), torch.zeros(1, 5, 4)), "same size"),
    (lambda: dense_crf_loss(torch.zeros(1, 2, 9), torch.zeros(1, 8, 5)), "probs (B, K, P)"),
    (lambda: DenseCRFLoss(weight=1.0, scale=0.0), "scale in (0, 1]"),
    (lambda: gaussian_features(torch.zeros(1, 3, 2, 2), 0.0, 1.0), "sigma_rgb"),
    (lambda: deep_features(torch.zeros(1, 2, 2, 2), (2, 2), 0.0), "sigma_deep"),
])
def test_bad_input_is_a_one_line_error(call, message):
    with pytest.raises((ConfigError, DataError)) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)
