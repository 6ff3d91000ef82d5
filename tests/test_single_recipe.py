"""One segmentation recipe: the single stage builds, augments and trains its network as train_seg does;
only its loss differs."""
import torch
from torch import nn
from torchvision import tv_tensors

from conftest import REPO
from pipeline.models.backbones import build_backbone
from pipeline.segmentation.single_stage import SingleStageModel
from pipeline.segmentation.training import segmentation_train_transform
from stages.config import SegTrainingParams, SingleParams, TrainSegParams, load_params


def _norms(module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_single_stage_model_freezes_the_backbone_batch_norms_as_deeplab():
    torch.manual_seed(0)
    model = SingleStageModel(build_backbone("tiny", 8), 3, embed_dim=8, with_cam=True, freeze_backbone_bn=True)
    model.train()
    assert _norms(model.backbone) and all(not m.training for m in _norms(model.backbone))
    assert all(not p.requires_grad for m in _norms(model.backbone) for p in m.parameters())
    assert all(m.training for m in _norms(model.head) + _norms(model.embed))  # the new heads train
    before = [m.running_mean.clone() for m in _norms(model.backbone)]
    model.forward_train(torch.rand(2, 3, 32, 32))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, _norms(model.backbone)))
    trained = SingleStageModel(build_backbone("tiny", 8), 3, embed_dim=None).train()
    assert all(m.training for m in _norms(trained.backbone))


def test_the_recipe_is_one_set_of_settings():
    recipe = set(SegTrainingParams.model_fields)
    assert {"lr", "scale_reference", "freeze_backbone_bn", "scale_min", "scale_max"} <= recipe
    assert set(TrainSegParams.model_fields) >= recipe and set(SingleParams.model_fields) >= recipe
    defaults_seg, defaults_single = TrainSegParams(), SingleParams()
    assert all(getattr(defaults_seg, name) == getattr(defaults_single, name) for name in recipe)
    params = load_params(REPO / "params.yaml")  # and params.yaml gives both stages the same recipe
    schedule = {"steps", "val_every", "resume_every"}  # how long each trains is the stage's own
    differ = [name for name in recipe - schedule if getattr(params.train_seg, name) != getattr(params.single, name)]
    assert differ == []


def test_random_scale_moves_the_roi_with_the_image_and_labels():
    torch.manual_seed(3)
    transform = segmentation_train_transform(48, 0.5, 0.5, scale_reference="image")
    image = tv_tensors.Image(torch.full((3, 40, 60), 200, dtype=torch.uint8))
    labels = tv_tensors.Mask(torch.ones((40, 60), dtype=torch.uint8))
    roi = tv_tensors.Mask(torch.ones((40, 60), dtype=torch.uint8))
    out_image, out_labels, out_roi = transform(image, labels, roi)
    assert out_image.shape == (3, 48, 48) and out_labels.shape == out_roi.shape == (48, 48)
    inside = out_roi == 1  # the image at half size (20 x 30) inside the padded crop
    assert int(inside.sum()) == 20 * 30
    assert bool((out_labels[inside] == 1).all()) and bool((out_labels[~inside] == 255).all())
    assert bool((out_image[:, ~inside] == 0).all()) and bool((out_image[:, inside] > 0).all())
