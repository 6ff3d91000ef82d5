"""SEAM at its default settings against the authors' own numbers (YudeWang/SEAM 3212261), one test per
fixture of ../shared/conformance (README.md there: inputs, conventions, tolerances), in float64."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.cam.maps import add_background, correlation_seed, keep_max_only, minmax_normalise
from pipeline.cam.methods.correlation import embedding_conv, low_activation_loss, pcm_propagate
from pipeline.cam.methods.seam import SEAM, equivariant_cross_terms, equivariant_l1
from pipeline.cam.readout import multiscale_cam

from conformance._fixtures import assert_outputs, load, tensor
from conformance._networks import FeatureDouble, ReadoutDouble, features, load_weights


def test_max_norm():
    """max_norm (tool/visualization.py): value and gradient, with an all-negative and a constant map."""
    data = load("seam_max_norm")
    p = tensor(data["in_p"], grad=True)
    out = minmax_normalise(p)
    (out * tensor(data["in_gradout"])).sum().backward()
    assert_outputs("seam_max_norm", data, {"out": out, "grad_p": p.grad})


def test_max_onehot():
    """The ECR target: only the per-pixel maximal foreground channel kept (ties keep all)."""
    data = load("seam_max_onehot")
    x = tensor(data["in_x"])
    assert_outputs("seam_max_onehot", data, {"out": add_background(keep_max_only(x[:, 1:]))})


def test_min_pool():
    """adaptive_min_pooling_loss: the weakest quarter of the per-pixel maximum, its value and gradient."""
    data = load("seam_min_pool")
    x = tensor(data["in_x"], grad=True)
    loss = low_activation_loss(x)
    loss.backward()
    assert_outputs("seam_min_pool", data, {"out_loss": loss, "grad_x": x.grad})


def test_er_ecr():
    """L_ER and both OHEM'd L_ECR terms from given normalised maps, and their gradients."""
    data = load("seam_er_ecr")
    cam1, cam2, rv1, rv2 = (tensor(data[k], grad=True) for k in ("in_cam1", "in_cam2", "in_cam_rv1", "in_cam_rv2"))
    er = equivariant_l1(cam1[:, 1:], cam2[:, 1:])
    ecr1, ecr2 = equivariant_cross_terms(cam1[:, 1:], cam2[:, 1:], rv1, rv2)
    (er + ecr1 + ecr2).backward()
    assert_outputs("seam_er_ecr", data, {
        "out_loss_er": er, "out_loss_ecr1": ecr1, "out_loss_ecr2": ecr2, "out_loss_ecr": ecr1 + ecr2,
        "grad_cam1": cam1.grad, "grad_cam2": cam2.grad, "grad_cam_rv1": rv1.grad, "grad_cam_rv2": rv2.grad,
    })


def test_pcm():
    """Net.PCM: cosine affinity of f9(f), column-normalised, propagating the seed; value and gradients."""
    data = load("seam_pcm")
    seed, f = tensor(data["in_seed"], grad=True), tensor(data["in_f"], grad=True)
    embed = embedding_conv(195, 192).double()
    with torch.no_grad():
        embed.weight.copy_(tensor(data["w_f9"]))
    out = pcm_propagate(seed, embed(f))
    (out * tensor(data["in_gradout"])).sum().backward()
    assert_outputs("seam_pcm", data, {"out": out, "grad_seed": seed.grad, "grad_f": f.grad,
                                      "grad_f9": embed.weight.grad})


def _seam(calls, data) -> SEAM:
    method = SEAM(FeatureDouble(calls), 20).double().eval()
    load_weights(method, method.pcm, data)
    return method


def test_head_stride1():
    """Net.forward on given features: the raw CAM (foreground rows; row 0 of fc8 is never used), the
    seed, the PCM output at the image size, and the gradients of sum(cam_rv * gradout)."""
    data = load("seam_head_stride1")
    conv4, conv5, conv6 = features(data)
    method = _seam([(conv4, conv5, conv6)], data)
    image = tensor(data["in_image"], grad=True)
    raw, refined = method._branch(image)
    (refined * tensor(data["in_gradout"])).sum().backward()
    torch.testing.assert_close(method.cam(image), refined[:, 1:])  # the read-out's map
    seed = correlation_seed(method.classifier(conv6))
    proj = method.pcm.features.stage_proj
    assert_outputs("seam_head_stride1", data, {
        "out_cam": raw, "out_cam_rv": refined, "out_seed": seed,
        "grad_f8_3": proj[0].weight.grad, "grad_f8_4": proj[1].weight.grad,
        "grad_f9": method.pcm.embed.weight.grad, "grad_image": image.grad,
    }, expected={"out_cam": data["out_cam"][:, 1:]})


def test_train_step_stride1():
    """One training step: L_cls, L_min, L_ER, L_ECR, the total and its gradients for every weight, for
    both branches' classifier inputs and for the image (through A(I) and f)."""
    data = load("seam_train_step_stride1")
    b1, b2 = features(data, "in_b1_"), features(data, "in_b2_")
    method = _seam([b1, b2], data)
    image = tensor(data["in_image"], grad=True)
    out = method.training_step(image, tensor(data["in_labels"]))
    out["loss"].backward()
    assert method.backbone.count == 2  # two separate forwards, I first
    proj = method.pcm.features.stage_proj
    fc8 = torch.cat([torch.zeros_like(method.classifier.weight.grad[:1]), method.classifier.weight.grad])
    assert_outputs("seam_train_step_stride1", data, {
        "out_cls": out["cls"], "out_min": out["min"], "out_er": out["er"], "out_ecr": out["ecr"],
        "out_loss": out["loss"], "grad_fc8": fc8, "grad_f8_3": proj[0].weight.grad,
        "grad_f8_4": proj[1].weight.grad, "grad_f9": method.pcm.embed.weight.grad,
        "grad_b1_conv6": b1[2].grad, "grad_b2_conv6": b2[2].grad, "grad_image": image.grad,
    })


def test_readout_image_size():
    """infer_SEAM.py's fusion of 4 scales x 2 flips and min-max; the pixels the authors leave slightly
    below 0 are 0 here."""
    data = load("seam_readout_image_size")
    method = ReadoutDouble(data["in_maps"], SEAM.readout_norm)
    cams = multiscale_cam(method, torch.zeros(3, 24, 40, dtype=torch.float64), data["in_class_indices"].tolist(),
                          scales=(0.5, 1.0, 1.5, 2.0), flip=True)
    assert method.calls == 4
    assert_outputs("seam_readout_image_size", data, {"out_norm_cam": cams},
                   expected={"out_norm_cam": np.maximum(data["out_norm_cam"], 0.0)})
