"""Plain CAM (Zhou et al., CVPR 2016): a 1x1 classifier over the last feature map, global average pooling,
multilabel soft-margin loss. The CAM of class c is the classifier applied at every location (eq. 2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.cam.methods.base import CamMethod
from pipeline.models.backbones.base import Backbone


class PlainCAM(CamMethod):
    name = "cam"

    def __init__(self, backbone: Backbone, num_classes: int):
        super().__init__(backbone, num_classes)
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)

    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        cams = self.cam(images)
        logits = cams.mean(dim=(2, 3))
        loss = F.multilabel_soft_margin_loss(logits, labels)
        return {"loss": loss, "cls": loss.detach()}

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images)[-1])
