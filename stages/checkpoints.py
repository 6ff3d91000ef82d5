"""Classifier checkpoints: the trained method together with everything needed to rebuild it."""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.errors import WsssError
from pipeline.methods import CamMethod, build_method
from pipeline.models.backbones import build_backbone


def save_checkpoint(path: Path, method: CamMethod, options: dict, backbone: dict, class_names: list[str],
                    extra: dict | None = None) -> None:
    """``extra``: further entries stored beside the weights (ReCAM's fine-tuned layers)."""
    torch.save(
        {
            "method": method.name,
            "options": options,
            "backbone": backbone,
            "class_names": class_names,
            "state_dict": method.state_dict(),
            **(extra or {}),
        },
        path,
    )


def load_checkpoint(path: Path, hint: str, keys: tuple[str, ...] = ("state_dict",)) -> dict:
    """The dict saved at ``path`` by a training stage. A missing file (with ``hint``: what to run), a
    truncated or foreign file, or one lacking any of ``keys`` is a one-line :class:`WsssError` naming
    ``path``."""
    path = Path(path)
    if not path.is_file():
        raise WsssError(f"{path}: checkpoint not found; {hint}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated (EOFError, RuntimeError from the zip reader), bit-flipped, foreign
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WsssError(f"{path}: unreadable checkpoint ({reason}); {hint}") from None
    missing = [key for key in keys if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise WsssError(f"{path}: not a checkpoint of this stage (missing {', '.join(missing)}); {hint}")
    return checkpoint


def load_method(path: Path, device: torch.device) -> tuple[CamMethod, dict]:
    """Rebuild the trained method stored at ``path`` (random init, then the stored weights)."""
    stage = "recam" if path.parent.parent.name == "recam" else "train-cls"  # ReCAM's fine-tuned one, or the classifier
    checkpoint = load_checkpoint(path, f"run `wsss-pipe {stage} --method {path.parent.name}` first",
                                 ("method", "options", "backbone", "class_names", "state_dict"))
    spec = checkpoint["backbone"]
    backbone = build_backbone(spec["name"], output_stride=spec["output_stride"], pretrained=None)
    method = build_method(checkpoint["method"], backbone, len(checkpoint["class_names"]) - 1, **checkpoint["options"])
    method.load_state_dict(checkpoint["state_dict"])
    return method.to(device).eval(), checkpoint
