"""ResNet-50 / ResNet-101 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) from
torchvision as a :class:`Backbone`, dilated to output stride 16 or 8 (DeepLab, Chen et al. TPAMI 2018:
the strides of the last stages become atrous rates, ``replace_stride_with_dilation``).

Also holds :func:`load_state_dict_file`, the strict local-weights loader shared by all backbones.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.hub import load_state_dict_from_url
from torchvision.models import ResNet50_Weights, ResNet101_Weights, resnet50, resnet101

from pipeline.errors import ConfigError
from pipeline.models.backbones.base import Backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_ARCHS = {
    "resnet50": (resnet50, ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (resnet101, ResNet101_Weights.IMAGENET1K_V1),
}
# replace_stride_with_dilation for layer2..layer4 per output stride
_DILATION = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}


def read_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (optionally under a ``"state_dict"`` key)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"backbone.pretrained: {path} is a directory, not a weights file")
    if not path.is_file():
        raise ConfigError(f"backbone.pretrained: weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable / non-torch file
        raise ConfigError(f"backbone.pretrained: cannot read weights file {path} ({type(exc).__name__})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"backbone.pretrained: weights file {path} does not hold a state dict of tensors")
    return state


def load_state_dict_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path,
                           ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Strictly load ``state`` into ``module`` (after dropping keys that start with ``ignore_prefixes``);
    on any missing / unexpected key or shape mismatch raise a one-line ConfigError naming ``source``."""
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)} if ignore_prefixes else state
    own = module.state_dict()
    # BatchNorm's num_batches_tracked is a counter, not a weight; older/converted files lack it
    missing = sorted(k for k in own.keys() - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(state.keys() - own.keys())
    shapes = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        detail = "; ".join(
            f"{what} {len(keys)} keys e.g. {keys[0]}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape for", shapes)) if keys
        )
        raise ConfigError(f"backbone.pretrained: weights file {source} does not fit this backbone ({detail})")
    module.load_state_dict(state, strict=False)


def load_state_dict_file(module: nn.Module, path: str | Path, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Strictly load the state dict file ``path`` into ``module`` (see :func:`load_state_dict_strict`)."""
    load_state_dict_strict(module, read_state_dict_file(path), path, ignore_prefixes)


class ResNetBackbone(Backbone):
    """torchvision ResNet-50/101 without ``fc``: stages layer1..layer4 (256/512/1024/2048 channels) at
    strides 4, 8, then 16 / ``output_stride``. Input normalised with the ImageNet mean/std.

    ``pretrained``: None / "none" (random init), "imagenet" (torchvision IMAGENET1K_V1, downloaded), or a
    path to a torchvision-layout state dict (``fc.*`` keys, if present, are ignored; the rest is strict).
    """

    def __init__(self, name: str = "resnet50", output_stride: int = 16, pretrained: str | Path | None = None):
        super().__init__()
        if name not in _ARCHS:
            raise ConfigError(f"backbone.name: unknown ResNet {name!r}; choose one of {', '.join(_ARCHS)}")
        self.check_output_stride(name, output_stride)
        builder, weights = _ARCHS[name]
        net = builder(weights=None, replace_stride_with_dilation=_DILATION[output_stride])
        net.fc = nn.Identity()  # CAM heads replace the ImageNet classifier
        if pretrained == "imagenet":
            load_state_dict_strict(net, download_state_dict(name, weights.url), weights.url, ignore_prefixes=("fc.",))
        elif pretrained not in (None, "none"):
            load_state_dict_file(net, pretrained, ignore_prefixes=("fc.",))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.stage_channels = (256, 512, 1024, 2048)
        self.stage_strides = (4, 8, min(16, output_stride), output_stride)
        self.output_stride = output_stride
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_until(images, -1)[0]

    def forward_until(self, images: torch.Tensor, level: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.stem(self.normalize(images))
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4)[: self.check_level(level) + 1]:
            x = layer(x)
            features.append(x)
        return features, x

    def forward_from(self, state: torch.Tensor, level: int) -> list[torch.Tensor]:
        x, features = state, []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4)[self.check_level(level) + 1 :]:
            x = layer(x)
            features.append(x)
        return features


def download_state_dict(name: str, url: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for ``name`` (from the torch hub cache, else downloaded)."""
    try:
        return load_state_dict_from_url(url, progress=False, check_hash=True)
    except Exception as exc:  # no network, proxy, hash mismatch, corrupt cache: all end the same way
        raise ConfigError(
            f"backbone.pretrained: cannot download the imagenet weights of {name} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); give a local weights file path instead"
        ) from exc
