"""The classifier trainer's frozen batch norm and the train_cls scale augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pipeline.cam.methods import build_method
from pipeline.data.transforms import as_tv, train_transform
from pipeline.engine.epochs import train_method
from pipeline.engine.hooks import freeze_batchnorm
from pipeline.errors import ConfigError
from pipeline.models.backbones.tiny import TinyBackbone
from stages.config import load_params

from conftest import coloured_squares


def batchnorms(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_freeze_batchnorm_sets_eval_mode_and_stops_affine_gradients():
    method = build_method("cam", TinyBackbone(), 3).train()
    layers = batchnorms(method.backbone)
    assert layers, "the tiny backbone should have batch norm to test this"
    assert freeze_batchnorm(method.backbone) == len(layers)
    assert all(not m.training for m in layers)
    assert all(not p.requires_grad for m in layers for p in m.parameters())
    assert method.classifier.weight.requires_grad  # only batch norm is frozen
    before = [m.running_mean.clone() for m in layers]
    method.backbone(torch.rand(2, 3, 32, 32))
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, layers))  # statistics not updated


@pytest.mark.parametrize("freeze", [True, False])
def test_trainer_freezes_backbone_batchnorm_only_when_asked(freeze):
    torch.manual_seed(0)
    method = build_method("seam", TinyBackbone(), 3, scale=0.5)
    images, labels = coloured_squares(batch=2, size=32)
    loader = DataLoader(TensorDataset(images, labels), batch_size=2)
    layers = batchnorms(method.backbone)
    before = [m.running_mean.clone() for m in layers]
    weights = [m.weight.clone() for m in layers]
    history = train_method(method, loader, epochs=1, lr=0.01, amp=False, freeze_bn=freeze)
    assert np.isfinite(history[0]["loss"])
    unchanged_stats = all(torch.equal(b, m.running_mean) for b, m in zip(before, layers))
    unchanged_affine = all(torch.equal(w, m.weight) for w, m in zip(weights, layers))
    assert unchanged_stats == freeze and unchanged_affine == freeze


def test_freeze_bn_param_auto_follows_pretrained(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("train_cls:\n  epochs: 1\n")
    cfg = load_params(path).train_cls
    assert cfg.freeze_bn == "auto"
    assert cfg.freezes_bn("imagenet") and not cfg.freezes_bn("none") and not cfg.freezes_bn(None)
    assert load_params(path, ["train_cls.freeze_bn=false"]).train_cls.freezes_bn("imagenet") is False
    assert load_params(path, ["train_cls.freeze_bn=true"]).train_cls.freezes_bn("none") is True
    with pytest.raises(ConfigError, match="train_cls.freeze_bn"):
        load_params(path, ["train_cls.freeze_bn=sometimes"])


def test_freeze_bn_auto_trains_bn_on_the_generated_dataset(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("synthetic:\n  root: data/synthetic\ndata:\n  root: ./data/synthetic/\n")
    params = load_params(path)
    assert params.uses_generated_data()
    assert not params.train_cls.freezes_bn("imagenet", params.uses_generated_data())
    assert not params.train_seg.freezes_backbone_bn("imagenet", params.uses_generated_data())
    photos = load_params(path, ["data.root=/data/msrc_objects"])
    assert not photos.uses_generated_data()
    assert photos.train_cls.freezes_bn("imagenet", photos.uses_generated_data())
    assert photos.train_seg.freezes_backbone_bn("imagenet", photos.uses_generated_data())
    forced = load_params(path, ["train_cls.freeze_bn=true"])
    assert forced.train_cls.freezes_bn("imagenet", forced.uses_generated_data())


@pytest.mark.parametrize("height, width", [(60, 100), (100, 40)])
def test_scale_augmentation_resizes_the_long_side_relative_to_the_crop(height, width):
    """PSA/SEAM's RandomResizeLong then crop: with scale_min = scale_max = s the long side becomes
    crop * s (before the crop), so a crop-sized output is cut from an image of that size."""
    torch.manual_seed(0)
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = 255  # red everywhere: any pixel inside the image is red, padding is black
    out = train_transform(32, 0.5, 0.5, color_jitter=0.0)(as_tv(image))
    assert out.shape == (3, 32, 32)
    # long side 16, short side scaled in proportion (to within a pixel of rounding)
    red = out[0] > 0.5
    rows, cols = int(red.any(dim=1).sum()), int(red.any(dim=0).sum())
    long_extent, short_extent = (cols, rows) if width >= height else (rows, cols)
    assert long_extent == 16
    assert abs(short_extent - 16 * min(height, width) / max(height, width)) < 1



def test_progressive_stages_restart_the_poly_schedule(monkeypatch):
    from pipeline.cam.methods.ppl import PPL

    built = []
    real_sgd = torch.optim.SGD

    def capture(*args, **kwargs):
        built.append(real_sgd(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(torch.optim, "SGD", capture)
    torch.manual_seed(0)
    method = PPL(TinyBackbone(output_stride=8), 2, granularities=(1, 2), split_stages=(-2,))
    batches = [(torch.rand(2, 3, 32, 32), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))] * 2

    def lrs_of_a_run():
        seen = []
        train_method(method, batches, epochs=4, lr=0.1, head_lr_mult=1.0, amp=False,
                     on_step=lambda step, total: seen.append(built[-1].param_groups[0]["lr"]))
        return seen

    restarted = lrs_of_a_run()
    method.restart_schedule = False
    single = lrs_of_a_run()
    # two stages of 2 epochs x 2 steps: the decay starts again at step 4
    assert restarted[0] == pytest.approx(0.1) and restarted[4] == pytest.approx(0.1)
    assert restarted[3] < restarted[2] < restarted[1] < 0.1
    assert single[0] == pytest.approx(0.1) and single[4] < single[3] < 0.1
