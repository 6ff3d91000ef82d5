"""Classifier checkpoints: the trained method together with everything needed to rebuild it."""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.errors import WsssError
from pipeline.methods import CamMethod, build_method
from pipeline.models.backbones import build_backbone


def save_checkpoint(path: Path, method: CamMethod, options: dict, backbone: dict, class_names: list[str]) -> None:
    torch.save(
        {
            "method": method.name,
            "options": options,
            "backbone": backbone,
            "class_names": class_names,
            "state_dict": method.state_dict(),
        },
        path,
    )


def load_method(path: Path, device: torch.device) -> tuple[CamMethod, dict]:
    """Rebuild the trained method stored at ``path`` (random init, then the stored weights)."""
    if not path.is_file():
        raise WsssError(f"{path}: classifier checkpoint not found; run `wsss-pipe train-cls --method "
                        f"{path.parent.name}` first")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise WsssError(f"{path}: unreadable checkpoint ({exc})") from None
    spec = checkpoint["backbone"]
    backbone = build_backbone(spec["name"], output_stride=spec["output_stride"], pretrained=None)
    method = build_method(checkpoint["method"], backbone, len(checkpoint["class_names"]) - 1, **checkpoint["options"])
    method.load_state_dict(checkpoint["state_dict"])
    return method.to(device).eval(), checkpoint
