"""ReCAM: class re-activation maps (Chen et al., "Class Re-Activation Maps for Weakly-Supervised Semantic
Segmentation", CVPR 2022), as the authors' code computes it (zhaozhengChen/ReCAM: ``net/resnet50_cam.py``
``Net_CAM_Feature`` and ``Class_Predictor``, ``step/train_recam.py``, ``step/make_recam.py``).

A multi-label classifier trained with the sigmoid (binary cross-entropy) loss has no reason to keep a
class's CAM off the pixels of a class it always appears with (MSRC: face on the body, boat on the water).
ReCAM fine-tunes the trained classifier with a softmax cross-entropy that makes the classes compete
(the paper's Figure 3; the formulas below are the authors' code's):

- For every labelled class k of an image, the class-specific feature ``x_k = mean_p(A_k(p) f(p))``
  pools the feature map f (the map the 1x1 classifier W sees) weighted by the class's CAM
  ``A_k = ReLU(W_k f) / (max ReLU(W_k f) + 1e-5)``; A_k is not detached, so the loss also reaches W and f.
- A new bias-free linear predictor P (K x C) classifies each x_k; the loss is the softmax cross-entropy
  with target k, averaged over the image's labelled classes, summed over the images and divided by
  the batch size (:func:`recam_loss`).
- Fine-tuning objective: ``L = L_bce + loss_weight * L_sce`` (the authors' ``recam_loss_weight``
  1.0), L_bce the usual multilabel soft margin on the globally pooled CAM logits.
- Read-out (``make_recam.py``'s ``forward2``): the re-activated CAM of class k is
  ``ReLU((P_k * W_k) f)``: the classifier's weights multiplied element-wise by the predictor's, then the
  usual multi-scale + flip read-out divided by the maximum. :func:`fold_predictor` writes ``P * W`` into
  the classifier, so the fine-tuned method reads out through its own ``cam()`` and :mod:`pipeline.cam.readout`.

The authors' fine-tuning schedule (``run_sample.py``) is the stage's default (``recam`` in params.yaml,
:mod:`stages.recam`): 4 epochs, the predictor at lr 5e-4 and the trained network (backbone and
classifier) at 0.1 of it, weight decay 1e-4, poly decay (power 0.9), batch 16 with their CAM training's
augmentation, batch norm frozen (their ResNet-50's FixedBatchNorm). Their ``PolyOptimizer`` hands the
weight decay to SGD's third positional argument, which is the momentum, so they train with momentum 1e-4
(the same slip as IRN's, whose code they build on).

Departures from that schedule, measured (benchmarks/README.md, "ReCAM on MSRC"): ``recam.momentum`` 0.9 and
``recam.epochs`` 12 are the defaults. The authors' schedule is 2,600 steps on VOC's 10,582 images; on a
small dataset (MSRC: 351 images, 88 steps) the new predictor at momentum 1e-4 stays near chance and the
re-activated CAMs, read out through it, fall far below plain CAM; momentum 0.9 trains it, and 12 epochs
lift the CAMs and the pseudo masks above plain CAM's three-seed range. ``recam.momentum: 0.0001`` and ``recam.epochs: 4`` give
the authors' schedule.

It works on top of every CAM method of :mod:`pipeline.cam.methods`: each has a bias-free 1x1 ``classifier``
over ``classifier_features(images)``. Departures, kept on purpose:

- Every method, not only plain CAM: the fine-tuning loss is the authors' (L_bce on the classifier's pooled
  CAM + L_sce), not the method's own objective; what trains is what the loss reaches (backbone,
  classifier and, for PPL's fusion variant, its branches). SEAM's PCM and CPN's PRCM get no gradient and
  stay as trained; their read-out refines the re-activated CAM as it refined the plain one.
- The pooled features are one ``einsum`` (B, K, C) instead of the authors' (B, K, C, h, w) product: the
  same values without the K-fold copy of the feature map.
- Augmentation, batch size, batch-norm freezing and mixed precision are ``train_cls``'s (the authors reuse
  their CAM training's data pipeline and batch size); their 512 crops are the project's ``crop_size``.
- Their ResNet-50 keeps its stem (conv1, bn1) fixed; here the whole backbone trains, as in ``train_cls``.
- No per-epoch validation loss and checkpoints (theirs are logged, never used to select a model).

Figures on MSRC (``bash benchmarks/msrc.sh recam``): benchmarks/README.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.cam.maps import normalize_cams
from pipeline.cam.methods.base import CamMethod, backbone_head_groups
from pipeline.errors import ConfigError


def class_masked_features(features: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
    """ReCAM's class-specific features (B, K, C): feature map (B, C, h, w) weighted by each class's map
    (B, K, h, w) (already normalised: :func:`pipeline.cam.maps.normalize_cams`), averaged over the h * w locations."""
    if features.shape[-2:] != cams.shape[-2:] or features.shape[0] != cams.shape[0]:
        raise ValueError(f"class_masked_features: features {tuple(features.shape)} and CAMs {tuple(cams.shape)} differ")
    return torch.einsum("bkhw,bchw->bkc", cams, features) / (features.shape[-2] * features.shape[-1])


def recam_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax cross-entropy of the class-specific features' logits (B, K, K) (entry [b, k] classifies
    image b's features of class k) against their own class, over the labelled classes (multi-hot
    ``labels`` (B, K)): mean over each image's classes, summed over images, divided by B (images without
    a label add 0). Also the accuracy over all labelled (image, class) pairs."""
    batch, num_classes = labels.shape
    targets = torch.arange(num_classes, device=logits.device).expand(batch, num_classes)
    ce = F.cross_entropy(logits.reshape(-1, num_classes).float(), targets.reshape(-1), reduction="none")
    present = (labels > 0.5).to(ce.dtype).reshape(batch, num_classes)
    per_image = (ce.view(batch, num_classes) * present).sum(1) / present.sum(1).clamp(min=1)
    correct = (logits.argmax(-1) == targets).to(ce.dtype) * present
    accuracy = correct.sum() / present.sum().clamp(min=1)
    return per_image.sum() / batch, accuracy


def classifier_of(method: CamMethod) -> nn.Conv2d:
    """The method's bias-free 1x1 classifier, the layer ReCAM re-weights; ConfigError if it has none."""
    layer = getattr(method, "classifier", None)
    if not isinstance(layer, nn.Conv2d) or layer.kernel_size != (1, 1) or layer.bias is not None:
        raise ConfigError(f"recam: method {method.name!r} has no bias-free 1x1 classifier to re-activate")
    return layer


class ReCAM(nn.Module):
    """The fine-tuning objective around a trained ``method`` (trained by :func:`pipeline.engine.epochs.train_method`
    like a method: ``training_step``, ``param_groups``, ``backbone``)."""

    def __init__(self, method: CamMethod, loss_weight: float = 1.0):
        super().__init__()
        if loss_weight < 0:
            raise ConfigError(f"recam.loss_weight: must be non-negative, got {loss_weight}")
        classifier = classifier_of(method)
        self.method = method
        self.loss_weight = float(loss_weight)
        num_classes, channels = classifier.weight.shape[:2]
        self.predictor = nn.Linear(channels, num_classes, bias=False)  # the authors' 1x1 conv, same init

    @property
    def backbone(self) -> nn.Module:
        return self.method.backbone

    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.method.classifier_features(images)
        cams = self.method.classifier(features)
        bce = F.multilabel_soft_margin_loss(cams.mean(dim=(2, 3)), labels)
        masked = class_masked_features(features, normalize_cams(cams))
        sce, accuracy = recam_loss(self.predictor(masked), labels)
        loss = bce + self.loss_weight * sce
        return {"loss": loss, "cls": bce.detach(), "recam": sce.detach(), "acc": accuracy.detach()}

    def param_groups(self, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
        """The trained network (every parameter of the method that requires grad; only those the loss
        reaches get a gradient, so SGD leaves the others alone) at ``lr``, the new predictor at
        ``lr * head_lr_mult`` (the authors: 5e-5 and 5e-4)."""
        return backbone_head_groups(self.method, [self.predictor], lr, head_lr_mult)


@torch.no_grad()
def fold_predictor(method: CamMethod, predictor: nn.Linear) -> CamMethod:
    """Write the read-out weights ``P * W`` (element-wise) into ``method``'s classifier, in place: its
    ``cam()`` then gives the re-activated CAMs. Returns ``method``."""
    classifier = classifier_of(method)
    if predictor.weight.shape != classifier.weight.shape[:2]:
        raise ConfigError(f"recam: predictor {tuple(predictor.weight.shape)} does not match the classifier "
                          f"{tuple(classifier.weight.shape[:2])}")
    classifier.weight.mul_(predictor.weight.to(classifier.weight)[..., None, None])
    return method
