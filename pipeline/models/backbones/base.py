"""The one interface every backbone implements."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.errors import ConfigError


class Backbone(nn.Module):
    """A feature extractor behind one interface.

    ``forward(images)`` takes RGB images scaled to [0, 1], shape (B, 3, H, W) (each backbone applies its
    own input normalisation), and returns the list of stage feature maps, shallow to deep; the last one is
    the final feature map at ``output_stride``. ``stage_channels[i]`` and ``stage_strides[i]`` give the
    channel count and stride of stage i. Refinement modules (SEAM's PCM, CPN's PRCM, AffinityNet) take
    the deeper stages; heads take the last.

    The forward pass can also be cut after any stage ``level`` (PPL runs the stages after ``level`` on
    feature-map patches): ``forward_until(images, level)`` returns the features of stages 0..level and the
    running state, and ``forward_from(state, level)`` the features of the stages after ``level``;
    ``forward_until(x, l)[0] + forward_from(forward_until(x, l)[1], l) == forward(x)``. The state is the
    tensor the next stage consumes; it equals the stage's feature map except where a backbone taps a
    different tensor (ResNet-38 taps the BN-ReLU of the next block's input). ``forward_from`` accepts a
    state of any spatial size, e.g. a patch of it.
    """

    stage_channels: tuple[int, ...]
    stage_strides: tuple[int, ...]
    output_stride: int

    @classmethod
    def check_output_stride(cls, name: str, output_stride: int) -> None:
        """ConfigError naming ``backbone.output_stride`` unless backbone ``name`` supports ``output_stride``
        (:data:`pipeline.models.backbones.OUTPUT_STRIDES`)."""
        from pipeline.models.backbones import OUTPUT_STRIDES

        if output_stride not in OUTPUT_STRIDES[name]:
            allowed = ", ".join(str(s) for s in OUTPUT_STRIDES[name])
            raise ConfigError(f"backbone.output_stride: {name} supports {allowed}, got {output_stride!r}")

    @property
    def out_channels(self) -> int:
        return self.stage_channels[-1]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def num_stages(self) -> int:
        return len(self.stage_channels)

    def check_level(self, level: int) -> int:
        """``level`` as a non-negative stage index (negative counts from the end); ConfigError if out of range."""
        n = self.num_stages
        if not -n <= level < n:
            raise ConfigError(f"backbone level {level} out of range for {n} stages (-{n}..{n - 1})")
        return level % n

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def forward_until(
        self, images: torch.Tensor, level: int
    ) -> tuple[list[torch.Tensor], torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def forward_from(self, state: torch.Tensor, level: int) -> list[torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError
