"""The segmentation models that ``train_seg`` and ``train_single`` write, read back by the stages that use
them (``eval_seg``, ``eval_single``, ``overlays``) without importing the training code (its augmentation
pulls in torchvision and its logging dvclive: seconds per process)."""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.models.backbones import build_backbone
from pipeline.segmentation.deeplab import build_deeplab
from stages.config import Params


def seg_tag(params: Params) -> str:
    """``train_seg``'s output folder name: the CAM method and the label source."""
    return f"{params.method}_{params.train_seg.labels}"


def single_tag(params: Params) -> str:
    """``train_single``'s output folder name: the supervision and the loss."""
    return f"{params.single.supervision}_{params.single.loss}"


def load_model(path: Path, device: torch.device):
    """``train_seg``'s DeepLab (eval mode, on ``device``) and its checkpoint."""
    from stages.checkpoints import load_checkpoint, rebuilding

    checkpoint = load_checkpoint(path, "run `wsss-pipe train-seg` first")
    with rebuilding(path):
        spec = checkpoint["backbone"]
        backbone = build_backbone(spec["name"], spec["output_stride"], pretrained=None)
        model = build_deeplab(backbone, len(checkpoint["class_names"]), head=checkpoint["head"])
        model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint


def load_single_model(path: Path, device: torch.device):
    """``train_single``'s model (eval mode, on ``device``) and its checkpoint."""
    from pipeline.segmentation.single_stage import SingleStageModel
    from stages.checkpoints import load_checkpoint, rebuilding

    checkpoint = load_checkpoint(path, "run `wsss-pipe train-single` first",
                                 ("head", "class_names", "embed_dim", "with_cam", "backbone", "state_dict"))
    with rebuilding(path):
        spec = checkpoint["backbone"]
        backbone = build_backbone(spec["name"], spec["output_stride"], pretrained=None)
        model = SingleStageModel(backbone, len(checkpoint["class_names"]), head=checkpoint["head"],
                                 embed_dim=checkpoint["embed_dim"], with_cam=checkpoint["with_cam"])
        model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint
