"""The interface every weakly supervised CAM method (cam, seam, ppl, cpn) implements.

A method is a small ``nn.Module`` around a shared :class:`~pipeline.models.backbones.base.Backbone`:
it defines the training objective (``training_step``) and how CAMs are read out (``cam``). The generic
trainer (:mod:`pipeline.engine.epochs`) and the multi-scale CAM read-out (:mod:`pipeline.cam.readout`) are shared.
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.models.backbones.base import Backbone


class CamMethod(nn.Module):
    """Base class. Subclasses set ``name`` and implement ``training_step`` and ``cam``.

    ``num_classes`` counts foreground classes only (VOC: 20); labels are (B, num_classes) multi-hot floats.
    """

    name: str = ""
    #: How the multi-scale read-out normalises each class map (:func:`pipeline.cam.readout.multiscale_cam`):
    #: "max" (PSA/IRN's CAM: divide by the maximum) or "minmax" (SEAM/CPN's inference).
    readout_norm: str = "max"

    def __init__(self, backbone: Backbone, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes

    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms for one batch. ``images`` (B, 3, H, W) in [0, 1]. Must contain ``"loss"`` (the total,
        what is back-propagated); other entries are detached-or-not scalars logged as they are."""
        raise NotImplementedError

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        """Raw class activation maps (B, num_classes, h, w), foreground classes only, at feature resolution
        or, where the authors' network resizes its output to the input (SEAM, CPN), at the input size.
        The read-out applies ReLU, resizes, fuses scales and flips, and normalises (``readout_norm``)."""
        raise NotImplementedError

    def classifier_features(self, images: torch.Tensor) -> torch.Tensor:
        """The feature map (B, C, h, w) the method's 1x1 ``classifier`` reads on a whole image (ReCAM
        re-weights it: :mod:`pipeline.cam.recam`); the backbone's last stage unless a method adds layers."""
        return self.backbone(images)[-1]

    def set_progress(self, epoch: int, num_epochs: int) -> None:
        """Called by the trainer at the start of every epoch (PPL switches granularity here)."""

    def head_modules(self) -> list[nn.Module]:
        """Modules trained from scratch (they get the head learning rate, 10x the backbone's)."""
        return [m for name, m in self.named_children() if name != "backbone"]

    def param_groups(self, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
        return backbone_head_groups(self.backbone, self.head_modules(), lr, head_lr_mult)


def backbone_head_groups(backbone: nn.Module, heads: list[nn.Module], lr: float, head_lr_mult: float) -> list[dict]:
    """SGD parameter groups: the (pretrained) backbone at ``lr``, layers trained from scratch at
    ``lr * head_lr_mult`` (10x in PSA, SEAM and DeepLab)."""
    head_params = [p for m in heads for p in m.parameters() if p.requires_grad]
    backbone_params = [p for p in backbone.parameters() if p.requires_grad]
    return [
        {"params": backbone_params, "lr": lr, "name": "backbone"},
        {"params": head_params, "lr": lr * head_lr_mult, "name": "head"},
    ]
