"""Classifier checkpoints: the trained method together with everything needed to rebuild it."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch

from pipeline.cam.methods import METHODS, build_method
from pipeline.cam.methods.base import CamMethod
from pipeline.engine.atomic import save_torch
from pipeline.errors import WsssError
from pipeline.models.backbones import build_backbone


def save_checkpoint(path: Path, method: CamMethod, options: dict, backbone: dict, class_names: list[str],
                    extra: dict | None = None) -> None:
    """``extra``: further entries stored beside the weights (ReCAM's fine-tuned layers)."""
    save_torch(
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


@contextlib.contextmanager
def rebuilding(path: Path) -> Iterator[None]:
    """Around rebuilding a model from the checkpoint at ``path``: a checkpoint whose keys are right but whose
    contents do not fit (weights of other shapes or names, an architecture this version does not build) is
    a one-line WsssError naming ``path``, not a traceback or a blamed parameter."""
    try:
        yield
    except WsssError as exc:
        raise WsssError(f"{path}: the model this checkpoint describes cannot be built ({exc})") from None
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        reason = " ".join(lines[:2])
        reason = reason if len(reason) <= 200 else reason[:197] + "..."
        raise WsssError(f"{path}: checkpoint weights do not fit the model it describes ({reason}); "
                        "retrain the stage that wrote it") from None


def load_method(path: Path, device: torch.device) -> tuple[CamMethod, dict]:
    """Rebuild the trained method stored at ``path`` (random init, then the stored weights)."""
    stage = "recam" if path.parent.parent.name == "recam" else "train-cls"  # ReCAM's fine-tuned one, or the classifier
    checkpoint = load_checkpoint(path, f"run `wsss-pipe {stage} --method {path.parent.name}` first",
                                 ("method", "options", "backbone", "class_names", "state_dict"))
    if checkpoint["method"] not in METHODS:
        raise WsssError(f"{path}: checkpoint of unknown method {checkpoint['method']!r} (this version has "
                        f"{', '.join(METHODS)}); retrain with `wsss-pipe train-cls`")
    with rebuilding(path):
        spec = checkpoint["backbone"]
        backbone = build_backbone(spec["name"], output_stride=spec["output_stride"], pretrained=None)
        method = build_method(checkpoint["method"], backbone, len(checkpoint["class_names"]) - 1,
                              **checkpoint["options"])
        method.load_state_dict(checkpoint["state_dict"])
    return method.to(device).eval(), checkpoint
