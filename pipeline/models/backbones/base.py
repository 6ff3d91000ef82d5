"""The one interface every backbone implements."""
from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """A feature extractor behind one interface.

    ``forward(images)`` takes RGB images scaled to [0, 1], shape (B, 3, H, W) (each backbone applies its
    own input normalisation), and returns the list of stage feature maps, shallow to deep; the last one is
    the final feature map at ``output_stride``. ``stage_channels[i]`` and ``stage_strides[i]`` give the
    channel count and stride of stage i. Refinement modules (SEAM's PCM, CPN's PRCM, AffinityNet) take
    the deeper stages; heads take the last.
    """

    stage_channels: tuple[int, ...]
    stage_strides: tuple[int, ...]
    output_stride: int

    @property
    def out_channels(self) -> int:
        return self.stage_channels[-1]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError
