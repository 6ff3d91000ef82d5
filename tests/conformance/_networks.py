"""The README's recipe for running SEAM's and CPN's networks on a fixture: a Backbone double that returns
the fixture's trunk features, and the authors' weights mapped onto the project's layers."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.models.backbones.base import Backbone

from conformance._fixtures import tensor


class FeatureDouble(Backbone):
    """Returns ``[unused, conv4, conv5, conv6]`` (channels 16, 32, 48, 64): the i-th call gets the i-th of
    ``calls`` (cycling); ``normalize`` is the identity, so the network input is the image as given."""

    def __init__(self, calls: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.stage_channels = (16, 32, 48, 64)
        self.stage_strides = (1, 1, 1, 1)
        self.output_stride = 1
        self.calls = list(calls)
        self.count = 0

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        conv4, conv5, conv6 = self.calls[self.count % len(self.calls)]
        self.count += 1
        return [conv4.new_zeros(conv4.shape[0], 16, *conv4.shape[-2:]), conv4, conv5, conv6]


def features(data: Mapping[str, np.ndarray], prefix: str = "in_") -> tuple[torch.Tensor, ...]:
    """One forward's (conv4, conv5, conv6), float64 leaves with gradients."""
    return tuple(tensor(data[f"{prefix}conv{i}"], grad=True) for i in (4, 5, 6))


def load_weights(method: nn.Module, correlation: nn.Module, data: Mapping[str, np.ndarray]) -> None:
    """classifier <- w_fc8[1:] (row 0 is the authors' never-used background row), stage projections <-
    w_f8_3, w_f8_4, embedding <- w_f9, CPN's key (a Linear on the context vectors) <- w_f10[:, :, 0, 0]."""
    with torch.no_grad():
        method.classifier.weight.copy_(tensor(data["w_fc8"][1:]))
        correlation.features.stage_proj[0].weight.copy_(tensor(data["w_f8_3"]))
        correlation.features.stage_proj[1].weight.copy_(tensor(data["w_f8_4"]))
        correlation.embed.weight.copy_(tensor(data["w_f9"]))
        if "w_f10" in data:
            correlation.key.weight.copy_(tensor(data["w_f10"][:, :, 0, 0]))


class ReadoutDouble:
    """A method whose ``cam(batch)`` returns ``maps[2i:2i + 2, 1:]`` on its i-th call (the fixture's
    per-call network outputs, already at the image size)."""

    def __init__(self, maps: np.ndarray, readout_norm: str):
        self.maps = tensor(maps)
        self.readout_norm = readout_norm
        self.calls = 0

    def cam(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.maps[2 * self.calls : 2 * self.calls + 2, 1:]
        self.calls += 1
        return out
