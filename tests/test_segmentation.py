"""Segmentation training / inference helpers on small synthetic tensors with the tiny backbone."""
import numpy as np
import pytest
import torch

from pipeline.engine.trainer import Hook
from pipeline.engine.trainer import poly_lr
from pipeline.errors import ConfigError, DataError
from pipeline.models.backbones.tiny import TinyBackbone
from pipeline.segmentation.deeplab import build_deeplab
from pipeline.segmentation.inference import predict, predict_label_map
from pipeline.segmentation.training import segmentation_loss, train_segmentation


def test_poly_lr():
    assert poly_lr(0.01, 0, 100) == pytest.approx(0.01)
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert poly_lr(0.01, 100, 100) == 0.0
    assert poly_lr(0.01, 30, 100) > poly_lr(0.01, 31, 100)


def test_ignored_pixels_do_not_affect_loss_or_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 7, requires_grad=True)
    target = torch.randint(0, 4, (2, 6, 7))
    target[:, :3] = 255
    other = target.clone()
    other[:, :3] = torch.randint(0, 4, (2, 3, 7))  # what the ignored pixels would have said
    loss = segmentation_loss(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.all(grad[:, :, :3] == 0)
    kept = torch.nn.functional.cross_entropy(logits[:, :, 3:], target[:, 3:])
    torch.testing.assert_close(loss, kept)
    assert not torch.isclose(segmentation_loss(logits, other), loss)
    changed = logits.detach().clone()
    changed[:, :, :3] += 10 * torch.randn(2, 4, 3, 7)
    torch.testing.assert_close(segmentation_loss(changed, target), loss.detach())


def test_all_ignored_batch_gives_zero_loss():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_loss_rejects_labels_beyond_classes():
    with pytest.raises(DataError, match="mask values"):
        segmentation_loss(torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), 7))


@pytest.mark.parametrize("head", ["v2", "v3"])
def test_predict_returns_distribution(head):
    torch.manual_seed(0)
    model = build_deeplab(TinyBackbone(output_stride=8), 3, head).train()
    image = torch.rand(3, 37, 45)
    probs = predict(model, image, scales=(1.0, 0.5, 1.5), flip=True)
    assert model.training  # mode restored
    assert probs.shape == (3, 37, 45) and probs.dtype == np.float32
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_flip_averaging_is_mirror_symmetric():
    torch.manual_seed(0)
    model = build_deeplab(TinyBackbone(), 3, "v3")
    image = torch.rand(3, 32, 40)
    a = predict(model, image, flip=True)
    b = predict(model, image.flip(-1), flip=True)
    np.testing.assert_allclose(a, b[:, :, ::-1], atol=1e-5)


def test_predict_label_map_uses_argmax():
    torch.manual_seed(0)
    model = build_deeplab(TinyBackbone(), 3, "v2")
    image = (np.random.default_rng(0).random((32, 40, 3)) * 255).astype(np.uint8)
    labels = predict_label_map(model, image)
    probs = predict(model, torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255)
    np.testing.assert_array_equal(labels, probs.argmax(0))
    assert predict_label_map(model, image, use_crf=True).shape == (32, 40)


def synthetic_batch():
    """A bright square on a dark background; labels 1 inside, 0 outside, a 255 band around the edge."""
    generator = torch.Generator().manual_seed(0)
    images = 0.1 * torch.rand(4, 3, 32, 32, generator=generator)
    masks = torch.zeros(4, 32, 32, dtype=torch.long)
    for i, offset in enumerate((4, 8, 12, 6)):
        images[i, :, offset:offset + 14, offset:offset + 14] += 0.8
        masks[i, offset:offset + 14, offset:offset + 14] = 1
    masks[:, :1] = 255
    return images, masks


@pytest.mark.parametrize("head", ["v2", "v3"])
def test_short_training_reduces_loss(head):
    torch.manual_seed(0)
    model = build_deeplab(TinyBackbone(output_stride=8), 2, head)  # os 16 leaves a 2x2 map at 32 px
    batch = synthetic_batch()
    logged = []

    class Log(Hook):
        def after_step(self, step, values):
            logged.append((step, values))

    records = train_segmentation(model, [batch], max_steps=40, lr=0.01, momentum=0.9, weight_decay=1e-4,
                                 head_lr_mult=10, device="cpu", amp=True, hooks=[Log()])
    history = [r["loss"] for r in records]
    assert len(history) == 40 and len(logged) == 40
    assert np.mean(history[-5:]) < 0.5 * np.mean(history[:5])
    assert logged[0][1]["lr"] == pytest.approx(0.01)
    assert logged[-1][1]["lr"] < logged[0][1]["lr"]
    probs = predict(model, batch[0][0])
    assert (probs.argmax(0) == batch[1][0].numpy())[batch[1][0].numpy() != 255].mean() > 0.9


def test_training_rejects_bad_input():
    model = build_deeplab(TinyBackbone(), 2, "v2")
    with pytest.raises(DataError, match="no batch"):
        train_segmentation(model, [], max_steps=1, lr=0.01)
    with pytest.raises(ConfigError, match="max_steps"):
        train_segmentation(model, [synthetic_batch()], max_steps=0, lr=0.01)


def test_random_scale_is_relative_to_the_image():
    from torchvision import tv_tensors

    from pipeline.segmentation.training import RandomScale

    image = tv_tensors.Image(torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.zeros(40, 60, dtype=torch.uint8))
    mask[10:30, 20:40] = 7
    for factor, size in ((0.5, (20, 30)), (2.0, (80, 120))):
        scaled_image, scaled_mask = RandomScale(factor, factor)(image, mask)
        assert scaled_image.shape[-2:] == size and scaled_mask.shape == size
        assert set(scaled_mask.unique().tolist()) == {0, 7}  # nearest: no interpolated labels
    with pytest.raises(ConfigError, match="scale_min"):
        RandomScale(1.5, 0.5)


@pytest.mark.parametrize("reference", ["image", "crop"])
def test_train_transform_crops_and_pads_the_mask_with_ignore(reference):
    from torchvision import tv_tensors

    from pipeline.segmentation.training import segmentation_train_transform

    torch.manual_seed(0)
    transform = segmentation_train_transform(32, 1.0, 1.0, 0.0, scale_reference=reference)
    image = tv_tensors.Image(torch.full((3, 20, 24), 200, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.full((20, 24), 3, dtype=torch.uint8))
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (3, 32, 32) and out_image.dtype == torch.float32 and out_image.max() <= 1.0
    labelled = int((out_mask == 3).sum())
    # "image" keeps the image's own size (20 x 24 pixels labelled); "crop" fits it into 32 x 32 first
    assert labelled == (20 * 24 if reference == "image" else 26 * 32)
    assert int((out_mask == 255).sum()) == 32 * 32 - labelled
    with pytest.raises(ConfigError, match="scale_reference"):
        segmentation_train_transform(32, 1.0, 1.0, scale_reference="input")


def test_frozen_backbone_batch_norm_keeps_pretrained_statistics():
    torch.manual_seed(0)
    model = build_deeplab(TinyBackbone(output_stride=8), 2, "v3", freeze_backbone_bn=True)
    backbone_bn = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    head_bn = [m for m in model.head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert backbone_bn and head_bn
    before = [(m.running_mean.clone(), m.weight.detach().clone()) for m in backbone_bn]
    head_before = head_bn[0].running_mean.clone()
    train_segmentation(model, [synthetic_batch()], max_steps=3, lr=0.01, amp=False)
    predict(model, synthetic_batch()[0][0])  # switches to eval and back: frozen norms must stay in eval
    assert model.training and all(not m.training for m in backbone_bn) and all(m.training for m in head_bn)
    for m, (mean, weight) in zip(backbone_bn, before):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.weight, weight)
    assert not torch.equal(head_bn[0].running_mean, head_before)
    grouped = {id(p) for group in model.param_groups(0.01) for p in group["params"]}
    assert not any(id(m.weight) in grouped for m in backbone_bn)
    unfrozen = build_deeplab(TinyBackbone(output_stride=8), 2, "v3")
    assert all(m.training for m in unfrozen.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.fixture
def tiny_stage_params(tmp_path):
    from conftest import REPO
    from stages.config import load_params

    def make(*overrides):
        return load_params(REPO / "params.yaml", [
            f"paths.outputs={tmp_path / 'out'}", f"synthetic.root={tmp_path / 'syn'}", f"data.root={tmp_path / 'syn'}",
            "synthetic.num_train=4", "synthetic.num_val=4", "synthetic.image_size=48",
            "backbone.name=tiny", "backbone.pretrained=none", "backbone.output_stride=8",
            "train_seg.steps=2", "train_seg.batch_size=2", "train_seg.crop_size=48", "train_seg.val_every=2",
            "workers=1", *overrides,
        ])
    return make


def test_deeplab_trains_on_its_own_split_and_needs_its_pseudo_masks(tiny_stage_params):
    from pipeline.data.image_files import save_mask
    from stages import data, synthetic, train_seg
    from stages.common import load_index, stage_dir

    params = tiny_stage_params("train_seg.split=val", "train_seg.scale_reference=image")
    synthetic.run(params)
    data.run(params)
    index = load_index(params)
    crf_dir = stage_dir(params, "crf", params.method)
    for image_id in index["splits"]["train"]["ids"]:  # pseudo masks made on data.train_split only
        save_mask(crf_dir / f"{image_id}.png", np.zeros((48, 48), dtype=np.uint8))
    first_val = index["splits"]["val"]["ids"][0]
    with pytest.raises(DataError, match=rf"{first_val}\.png: pseudo mask missing \(4 of 4 images of train_seg "
                                        r"split 'val'\)"):
        train_seg.run(params)
    for image_id in index["splits"]["val"]["ids"]:
        save_mask(crf_dir / f"{image_id}.png", np.zeros((48, 48), dtype=np.uint8))
    train_seg.run(params)
    checkpoint = torch.load(stage_dir(params, "train_seg", "cam_pseudo") / "model.pt", weights_only=False)
    assert checkpoint["train_split"] == "val"
