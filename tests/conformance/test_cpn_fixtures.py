"""CPN at its default settings against the authors' own numbers (Ferenas/CPN aca29f3), one test per
fixture of ../shared/conformance (README.md there: inputs, conventions, tolerances), in float64."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.cam.maps import correlation_seed
from pipeline.cam.methods.correlation import pcm_propagate, spatial_gather
from pipeline.cam.methods.cpn import CPN, complementary_terms
from pipeline.cam.readout import multiscale_cam

from conformance._fixtures import assert_outputs, load, tensor
from conformance._networks import FeatureDouble, ReadoutDouble, features, load_weights


def _cpn(calls, data, cls=CPN) -> CPN:
    method = cls(FeatureDouble(calls), 20).double().eval()
    load_weights(method, method.prcm, data)
    return method


def test_refine():
    """Net.forward / PCM / PRCM / SpatialGather on given features: raw CAM (foreground rows), seed, f,
    the region contexts, the PCM term, the refined map with the authors' key layout, and the gradients
    of sum(cam_rv * gradout) for f8_3, f8_4, f9, f10 and the image."""
    data = load("cpn_refine")
    conv4, conv5, conv6 = features(data)
    method = _cpn([(conv4, conv5, conv6)], data)
    image = tensor(data["in_image"], grad=True)
    raw, refined = method._forward(image)
    (refined * tensor(data["in_gradout"])).sum().backward()
    torch.testing.assert_close(method.cam(image), refined[:, 1:])  # the read-out's map
    with torch.no_grad():
        seed = correlation_seed(method.classifier(conv6))
        f = method.prcm.features([None, conv4, conv5, conv6], image)
        context = spatial_gather(f, seed)  # (B, K, D)
        pcm_term = pcm_propagate(seed, method.prcm.embed(f))
    proj = method.prcm.features.stage_proj
    assert_outputs("cpn_refine", data, {
        "out_cam": raw, "out_cam_rv": refined, "out_seed": seed, "out_f": f,
        "out_context": context.transpose(1, 2)[..., None], "out_pcm_term": pcm_term,
        "grad_f8_3": proj[0].weight.grad, "grad_f8_4": proj[1].weight.grad,
        "grad_f9": method.prcm.embed.weight.grad, "grad_f10": method.prcm.key.weight.grad[:, :, None, None],
        "grad_image": image.grad,
    }, expected={"out_cam": data["out_cam"][:, 1:]})


def test_losses():
    """L_CP (raw and refined), the cross-regularisation target and both OHEM'd terms from given maps,
    and the gradients of L_CP + L_CR."""
    data = load("cpn_losses")
    names = ("p_cam", "p_cam1", "p_cam2", "p_cam_improved", "p_cam_improved1", "p_cam_improved2")
    maps = {k: tensor(data[f"in_{k}"], grad=True) for k in names}
    w1 = tensor(data["in_ctri"])[:, None, None, None]
    terms = complementary_terms([maps[k][:, 1:] for k in names[:3]], [maps[k] for k in names[3:]], w1,
                                tensor(data["in_labels"]))
    cp = terms["cp_raw"] + terms["cp_refined"]
    cr = terms["cr_for_2"] + terms["cr_for_1"]
    (cp + cr).backward()
    assert maps["p_cam1"].grad is None and maps["p_cam2"].grad is None  # the raw halves are a fixed target
    assert_outputs("cpn_losses", data, {
        "out_loss_tcp": terms["cp_raw"], "out_loss_tcp_improved": terms["cp_refined"], "out_loss_tcp_all": cp,
        "out_target_for_improved2": terms["target_for_2"], "out_loss_cpcr1_ohem": terms["cr_for_2"],
        "out_loss_cpcr2_ohem": terms["cr_for_1"], "out_loss_cpcr": cr,
        "grad_p_cam": maps["p_cam"].grad, "grad_p_cam_improved": maps["p_cam_improved"].grad,
        "grad_p_cam_improved1": maps["p_cam_improved1"].grad, "grad_p_cam_improved2": maps["p_cam_improved2"].grad,
    })


def test_train_step_stride1():
    """One training step with the fixture's patch pair: L_cls, L_min, L_CP, L_CR, the total and its
    gradients for every weight, for the three forwards' classifier inputs and for the image."""
    data = load("cpn_train_step_stride1")
    keep1 = tensor(data["in_keep1"])

    class FixedPair(CPN):
        def _masks(self, images):
            return keep1, 1.0 - keep1

    calls = [features(data, f"in_f{i}_") for i in range(3)]
    method = _cpn(calls, data, FixedPair)
    assert float(method.neutral.abs().max()) == 0.0  # identity normalisation: hidden pixels are 0
    image = tensor(data["in_image"], grad=True)
    out = method.training_step(image, tensor(data["in_labels"]))
    out["loss"].backward()
    assert method.backbone.count == 3  # I, I1, I2 in three forwards
    proj = method.prcm.features.stage_proj
    fc8 = torch.cat([torch.zeros_like(method.classifier.weight.grad[:1]), method.classifier.weight.grad])
    assert_outputs("cpn_train_step_stride1", data, {
        "out_cls": out["cls"], "out_min": out["min"], "out_cp": out["cp"], "out_cr": out["cr"],
        "out_loss": out["loss"], "grad_fc8": fc8, "grad_f8_3": proj[0].weight.grad,
        "grad_f8_4": proj[1].weight.grad, "grad_f9": method.prcm.embed.weight.grad,
        "grad_f10": method.prcm.key.weight.grad[:, :, None, None], "grad_image": image.grad,
        "grad_f0_conv6": calls[0][2].grad, "grad_f1_conv6": calls[1][2].grad, "grad_f2_conv6": calls[2][2].grad,
    })


def test_readout_image_size():
    """infer_cam.py's fusion and min-max; the authors then halve every value (compared as 2x), and the
    pixels they leave slightly below 0 are 0 here."""
    data = load("cpn_readout_image_size")
    method = ReadoutDouble(data["in_maps"], CPN.readout_norm)
    cams = multiscale_cam(method, torch.zeros(3, 24, 40, dtype=torch.float64), data["in_class_indices"].tolist(),
                          scales=(0.5, 1.0, 1.5, 2.0), flip=True)
    assert method.calls == 4
    assert_outputs("cpn_readout_image_size", data, {"out_norm_cam": cams},
                   expected={"out_norm_cam": np.maximum(2.0 * data["out_norm_cam"], 0.0)})
