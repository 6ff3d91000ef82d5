"""Every path that runs on CUDA, run on each ``device`` (conftest: the CPU, and CUDA where present, marked
``cuda``): training with AMP + GradScaler (epochs and steps), the multi-scale CAM read-out, DeepLab
prediction, both random walks, the cached pair indices. On CUDA the results must match the CPU's."""
import numpy as np
import pytest
import torch

from conftest import coloured_squares
from pipeline.cam.methods import build_method
from pipeline.cam.readout import multiscale_cam
from pipeline.engine.epochs import train_method
from pipeline.engine.trainer import Hook
from pipeline.models.backbones import build_backbone
from pipeline.propagation.affinitynet.walk import propagate_cam
from pipeline.propagation.irn.walk import propagate_boundary
from pipeline.propagation.pairs import pair_indices
from pipeline.segmentation.deeplab import build_deeplab
from pipeline.segmentation.inference import predict
from pipeline.segmentation.training import train_segmentation


def _tol(device) -> float:
    """CUDA convolutions may run in TF32 (10-bit mantissa): agreement to 1e-2 of [0, 1] maps; CPU exact."""
    return 1e-2 if device.type == "cuda" else 1e-5


def _method(seed=0):
    torch.manual_seed(seed)
    return build_method("cam", build_backbone("tiny", 8), num_classes=3)


def test_train_method_with_amp_on_device(device):
    images, labels = coloured_squares(batch=4, size=48)
    loader = [(images[:2], labels[:2]), (images[2:], labels[2:])]
    method = _method()
    history = train_method(method, loader, epochs=2, lr=0.01, device=device, amp=True)
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    assert all(type(v) in (int, float) for h in history for v in h.values())  # host numbers, not tensors
    assert next(method.parameters()).device.type == device.type


def test_train_segmentation_logs_every_step_in_order_on_device(device):
    torch.manual_seed(0)
    model = build_deeplab(build_backbone("tiny", 8), 3, head="v3")
    images, labels = coloured_squares(batch=4, size=48)
    masks = labels.argmax(1)[:, None, None].expand(4, 48, 48).clone()
    loader = [(images[:2], masks[:2]), (images[2:], masks[2:])]
    seen = []

    class Log(Hook):
        val_every = 3  # the host syncs on CUDA must fall on the validation steps

        def after_step(self, step, values):
            seen.append((step, values["loss"]))
            if (step + 1) % self.val_every == 0:
                values["val_miou"] = 0.5

    losses = [r["loss"] for r in train_segmentation(model, loader, max_steps=7, lr=0.01, device=device, amp=True,
                                                      hooks=[Log()])]
    assert [s for s, _ in seen] == list(range(7)) and [l for _, l in seen] == losses
    assert all(np.isfinite(losses))


def test_cam_readout_and_prediction_match_the_cpu(device):
    method = _method().eval()
    image = coloured_squares(batch=1, size=40)[0][0]
    cams = multiscale_cam(method.to(device), image.to(device), [0, 2], scales=(1.0, 0.5), flip=True)
    assert cams.device.type == device.type and cams.shape == (2, 40, 40)
    reference = multiscale_cam(method.cpu(), image, [0, 2], scales=(1.0, 0.5), flip=True)
    assert torch.allclose(cams.cpu(), reference, atol=_tol(device))
    torch.manual_seed(0)
    model = build_deeplab(build_backbone("tiny", 8), 3, head="v2").eval()
    probs = predict(model.to(device), image, scales=(1.0, 0.75), flip=True)
    assert isinstance(probs, np.ndarray) and probs.shape == (3, 40, 40)
    assert np.allclose(probs, predict(model.cpu(), image, scales=(1.0, 0.75), flip=True), atol=_tol(device))


def test_random_walks_run_where_their_inputs_live(device):
    rng = np.random.default_rng(0)
    cams = rng.random((2, 32, 40)).astype(np.float32)
    keys = np.array([1, 3])
    features = torch.from_numpy(rng.random((16, 4, 5)).astype(np.float32))
    label_map, scores = propagate_cam(cams, keys, features.to(device), beta=8.0, logt=4, radius=3)
    cpu_map, cpu_scores = propagate_cam(cams, keys, features, beta=8.0, logt=4, radius=3)
    assert label_map.shape == (32, 40) and np.allclose(scores, cpu_scores, atol=_tol(device) / 10)
    boundary = torch.from_numpy(rng.random((8, 10)).astype(np.float32))
    label_map, scores = propagate_boundary(cams, keys, boundary.to(device), exp_times=3, radius=3)
    assert set(np.unique(label_map)) <= {0, 1, 3}
    assert np.allclose(scores, propagate_boundary(cams, keys, boundary, exp_times=3, radius=3)[1],
                       atol=_tol(device) / 10)


def test_pair_indices_are_copied_to_the_device_once(device):
    src, dst = pair_indices(6, 7, 3, device)
    again, _ = pair_indices(6, 7, 3, device)
    assert src.device.type == device.type and again.data_ptr() == src.data_ptr()
    cpu_src, cpu_dst = pair_indices(6, 7, 3)
    assert torch.equal(src.cpu(), cpu_src) and torch.equal(dst.cpu(), cpu_dst)


@pytest.mark.parametrize("steps", [1, 4])
def test_non_finite_loss_is_reported(device, steps):
    from pipeline.errors import ConfigError

    torch.manual_seed(0)
    model = build_deeplab(build_backbone("tiny", 8), 3, head="v3")
    images = torch.full((2, 3, 32, 32), float("nan"))
    masks = torch.ones((2, 32, 32), dtype=torch.long)
    message = r"train_seg: the loss became nan in term 'loss' at step 0 \(epoch 0\); lower train_seg.lr"
    with pytest.raises(ConfigError, match=message):
        train_segmentation(model, [(images, masks)], max_steps=steps, lr=0.01, device=device, amp=False)
