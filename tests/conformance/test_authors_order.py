"""SEAM and CPN off the fixtures' stride 1: at strides 2 and 4 every resize inside the network and the
training loop is real, so the order (resize to the input, then max_norm and the losses) and the resize
convention (``align_corners=True``) decide the numbers. The reference below is written in the test from
the authors' statements (YudeWang/SEAM 3212261 network/resnet38_SEAM.py, train_SEAM.py; Ferenas/CPN
aca29f3 network/resnet38_CPN.py, network/da_atten.py, train_cpn.py), for any number of classes, and the
project's SEAM / CPN at their defaults must reproduce it. No fixture needed: this runs everywhere."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.cam.methods.cpn import CPN
from pipeline.cam.methods.seam import SEAM

from conformance._networks import FeatureDouble

EPS = 1e-5


def up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def max_norm(p):  # tool/visualization.py, torch branch
    p = F.relu(p)
    high, low = p.amax(dim=(2, 3), keepdim=True), p.amin(dim=(2, 3), keepdim=True)
    return F.relu(p - low - EPS) / (high - low + EPS)


def with_background(x):  # channel 0 <- 1 - max over the foreground channels
    return torch.cat([1 - x[:, 1:].amax(dim=1, keepdim=True), x[:, 1:]], dim=1)


def min_pool_loss(x):  # adaptive_min_pooling_loss
    n, _, h, w = x.shape
    k = h * w // 4
    low = torch.topk(x.amax(dim=1).view(n, -1), k=k, dim=-1, largest=False)[0]
    return F.relu(low).sum() / (k * n)


def ohem(err, channels):
    n, _, h, w = err.shape
    return torch.topk(err.reshape(n, -1), k=int(channels * h * w * 0.2), dim=-1)[0].mean()


def seed_of(cam):  # Net.forward, the no_grad block
    d = F.relu(cam.detach())
    norm = F.relu(d - EPS) / (d.flatten(2).amax(-1)[..., None, None] + EPS)
    norm = with_background(norm)
    fg = norm[:, 1:]
    return torch.cat([norm[:, :1], fg * (fg >= fg.amax(dim=1, keepdim=True))], dim=1)


def pcm(seed, f, w9):  # Net.PCM
    n, _, h, w = f.shape
    seed = up(seed, (h, w)).view(n, -1, h * w)
    e = F.conv2d(f, w9).view(n, -1, h * w)
    e = e / (e.norm(dim=1, keepdim=True) + EPS)
    aff = F.relu(e.transpose(1, 2) @ e)
    aff = aff / (aff.sum(dim=1, keepdim=True) + EPS)
    return (seed @ aff).view(n, -1, h, w)


def prcm(seed, f, w9, w10):  # SpatialGather_Module, then Net.PRCM
    n, d, h, w = f.shape
    k = seed.shape[1]
    probs = F.softmax(up(seed, (h, w)).view(n, k, -1), dim=2)
    context = (probs @ f.view(n, d, -1).permute(0, 2, 1)).permute(0, 2, 1).unsqueeze(3)  # (n, D, K, 1)
    e = F.relu(F.conv2d(f, w9)).view(n, -1, h * w)
    key = F.relu(F.conv2d(context, w10)).view(n, k, -1)  # memory order, no transpose
    return F.softmax((key @ e) * k**-0.5, dim=-1).view(n, -1, h, w)


def network(x, feats, w, region: bool):
    """Net.forward: raw CAM and refined map, both at the input size."""
    conv4, conv5, conv6 = feats
    cam = F.conv2d(conv6, w["fc8"])
    h, wd = cam.shape[-2:]
    seed = seed_of(cam)
    f = torch.cat([up(x, (h, wd)), F.relu(F.conv2d(conv4.detach(), w["f8_3"])),
                   F.relu(F.conv2d(conv5.detach(), w["f8_4"]))], dim=1)
    refined = pcm(seed, f, w["f9"])
    if region:
        refined = refined + prcm(seed, f, w["f9"], w["f10"]) * seed
    return up(cam, x.shape[-2:]), up(refined, x.shape[-2:])


def seam_reference(img1, labels, feats1, feats2, w):
    """train_SEAM.py, from scale_factor to loss (written without in-place writes)."""
    k = labels.shape[1] + 1
    img2 = F.interpolate(img1, scale_factor=0.3, mode="bilinear", align_corners=True)
    label = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)[:, :, None, None]
    cam1, rv1 = network(img1, feats1, w, False)
    cls1 = F.multilabel_soft_margin_loss(cam1.mean(dim=(2, 3))[:, 1:], labels)
    min1 = min_pool_loss((rv1 * label)[:, 1:])
    small = lambda x: F.interpolate(x, scale_factor=0.3, mode="bilinear", align_corners=True)  # noqa: E731
    cam1, rv1 = small(max_norm(cam1)) * label, small(max_norm(rv1)) * label
    cam2, rv2 = network(img2, feats2, w, False)
    cls2 = F.multilabel_soft_margin_loss(cam2.mean(dim=(2, 3))[:, 1:], labels)
    min2 = min_pool_loss((rv2 * label)[:, 1:])
    cam2, rv2 = max_norm(cam2) * label, max_norm(rv2) * label
    er = (cam1[:, 1:] - cam2[:, 1:]).abs().mean()
    cam1, cam2 = with_background(cam1), with_background(cam2)

    def onehot(x):
        fg = x[:, 1:]
        return torch.cat([x[:, :1], fg * (fg == fg.amax(dim=1, keepdim=True))], dim=1)

    ecr = ohem((onehot(cam2.detach()) - rv1).abs(), k) + ohem((onehot(cam1.detach()) - rv2).abs(), k)
    return {"cls": (cls1 + cls2) / 2, "min": (min1 + min2) / 2, "er": er, "ecr": ecr}


def cpn_reference(img, labels, keep1, feats, w):
    """train_cpn.py, from img to loss, with a fixed patch pair (hidden pixels 0: identity normalisation)."""
    k = labels.shape[1] + 1
    label = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)[:, :, None, None]
    ctri = keep1.mean(dim=(1, 2, 3), keepdim=True)
    cams, refs, cls, low = [], [], [], []
    for x, weight, f in zip((img, img * keep1, img * (1 - keep1)), (1.0, ctri, 1 - ctri), feats):
        cam, ref = network(x, f, w, True)
        cls.append(F.multilabel_soft_margin_loss(cam.mean(dim=(2, 3))[:, 1:], labels))
        low.append(min_pool_loss((ref * label)[:, 1:]))
        cams.append(weight * max_norm(cam) * label)
        refs.append(weight * max_norm(ref) * label)
    cp = ((cams[1][:, 1:].detach() + cams[2][:, 1:].detach()) - cams[0][:, 1:]).abs().mean()
    cp = cp + (refs[0][:, 1:] - refs[1][:, 1:] - refs[2][:, 1:]).abs().mean()
    cams, refs = [with_background(c) for c in cams], [with_background(r) for r in refs]

    def onehot(x):
        return x * (x == x.amax(dim=1, keepdim=True))

    cr = ohem((onehot(cams[0].detach() - cams[1].detach()) - refs[2]).abs(), k)
    cr = cr + ohem((onehot(cams[0].detach() - cams[2].detach()) - refs[1]).abs(), k)
    return {"cls": sum(cls) / 3, "min": sum(low) / 3, "cp": cp, "cr": cr}


def grid(size, stride):
    return tuple(math.ceil(s / stride) for s in size)


def random_features(batch, size, stride, gen):
    h, w = grid(size, stride)
    return tuple((torch.randn(batch, c, h, w, generator=gen, dtype=torch.float64)).requires_grad_()
                 for c in (8, 12, 20))


def weights_of(method, correlation, gen):
    """The method's weights in the authors' layout (fc8 gets a background row 0 that no term may use)."""
    proj = correlation.features.stage_proj
    w = {"fc8": torch.cat([torch.randn_like(method.classifier.weight[:1]), method.classifier.weight]),
         "f8_3": proj[0].weight, "f8_4": proj[1].weight, "f9": correlation.embed.weight}
    if hasattr(correlation, "key"):
        w["f10"] = correlation.key.weight[:, :, None, None]
    return w


def assert_same(name, actual, expected, tol=1e-6):
    actual, expected = actual.detach(), expected.detach()
    scale = max(float(expected.abs().max()), 1e-12)
    error = float((actual - expected).abs().max()) / scale
    assert error <= tol, f"{name}: relative error {error:.3g} against the authors' order"


def double_of(calls):
    double = FeatureDouble(calls)
    double.stage_channels = (4, 8, 12, 20)
    return double


@pytest.mark.parametrize("stride", [2, 4])
def test_seam_training_step_follows_the_authors_order(stride):
    gen = torch.Generator().manual_seed(stride)
    size, classes = (24, 32), 5
    image = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 0, 0, 1]], dtype=torch.float64)
    small = (math.floor(size[0] * 0.3), math.floor(size[1] * 0.3))
    feats1, feats2 = random_features(2, size, stride, gen), random_features(2, small, stride, gen)
    method = SEAM(double_of([feats1, feats2]), classes, pcm_stage_dims=(6, 10), pcm_embed_dim=12).double()
    torch.manual_seed(0)
    out = method.training_step(image, labels)
    params = [method.classifier.weight, *method.pcm.parameters(), image, feats1[2], feats2[2]]
    grads = torch.autograd.grad(out["loss"], params)

    expected = seam_reference(image, labels, feats1, feats2, weights_of(method, method.pcm, gen))
    for key, value in expected.items():
        assert_same(key, out[key], value)
    expected_grads = torch.autograd.grad(sum(expected.values()), params)
    for i, (actual, reference) in enumerate(zip(grads, expected_grads)):
        assert_same(f"gradient {i}", actual, reference)

    method.backbone.calls, method.backbone.count = [feats1], 0
    _, refined = network(image, feats1, weights_of(method, method.pcm, gen), False)
    assert_same("cam", method.cam(image), refined[:, 1:])  # the read-out's map: at the input size


@pytest.mark.parametrize("stride", [2, 4])
def test_cpn_training_step_follows_the_authors_order(stride):
    gen = torch.Generator().manual_seed(10 + stride)
    size, classes = (24, 32), 3  # 4 regions with the background: the key layout for any class count
    image = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0]], dtype=torch.float64)
    keep1 = (torch.rand(2, 1, *size, generator=gen) < 0.5).double()
    feats = [random_features(2, size, stride, gen) for _ in range(3)]

    class FixedPair(CPN):
        def _masks(self, images):
            return keep1, 1.0 - keep1

    method = FixedPair(double_of(feats), classes, prcm_stage_dims=(6, 10), prcm_embed_dim=12).double()
    out = method.training_step(image, labels)
    params = [method.classifier.weight, *method.prcm.parameters(), image, *(f[2] for f in feats)]
    grads = torch.autograd.grad(out["loss"], params)

    expected = cpn_reference(image, labels, keep1, feats, weights_of(method, method.prcm, gen))
    for key, value in expected.items():
        assert_same(key, out[key], value)
    expected_grads = torch.autograd.grad(sum(expected.values()), params)
    for i, (actual, reference) in enumerate(zip(grads, expected_grads)):
        assert_same(f"gradient {i}", actual, reference)

    method.backbone.calls, method.backbone.count = feats[:1], 0
    _, refined = network(image, feats[0], weights_of(method, method.prcm, gen), True)
    assert_same("cam", method.cam(image), refined[:, 1:])
