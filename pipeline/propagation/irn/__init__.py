"""IRN (Ahn, Cho & Kwak, CVPR 2019) as a propagation method: relation labels from two constant
backgrounds (:mod:`.labels`), the class-boundary branch and its loss (:mod:`.network`), the boundary walk
(:mod:`.walk`).

The network and the walk (torch) are imported by the steps that run them: the label step, params
validation and the registry's list of methods import no torch."""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from pipeline.models.backbones import build_backbone
from pipeline.propagation.base import PropagationMethod, StageContext
from pipeline.propagation.irn.labels import calibrated_thresholds, relation_labels
from pipeline.propagation.irn.params import IrnParams
from pipeline.propagation.registry import register_propagation

if TYPE_CHECKING:
    from pipeline.propagation.irn.network import BoundaryNet


@register_propagation("irn")
class IrnPropagation(PropagationMethod):
    title = "IRN walk"
    Params = IrnParams
    label_reads = ("crf",)  # the label CRF's kernels are the pseudo-mask CRF's (IRN uses one CRF setting)
    torch_modules = ("pipeline.data.transforms", "pipeline.propagation.irn.network", "pipeline.propagation.irn.walk")

    def label_settings(self, cfg: IrnParams, context: StageContext) -> tuple[dict, bool]:
        """Thresholds ``auto`` place IRN's 0.30 / 0.05 relative to eval_cam's best threshold
        (:func:`~.labels.calibrated_thresholds`)."""
        labels = cfg.labels
        auto = labels.fg_threshold == "auto"
        fg, bg = calibrated_thresholds(context.cam_threshold()) if auto else (labels.fg_threshold, labels.bg_threshold)
        return {"fg_threshold": float(fg), "bg_threshold": float(bg),
                "crf": {"gt_prob": labels.gt_prob} | context.crf_kernels}, auto

    def relation_labels(self, image, cams, keys, crf: dict, **settings) -> np.ndarray:
        from pipeline.pseudo_masks.crf import dense_crf_labels

        return relation_labels(image, cams, keys, crf=partial(dense_crf_labels, **crf), **settings)

    def network_spec(self, cfg: IrnParams, context: StageContext) -> dict:
        return {"backbone": context.backbone.name, "output_stride": context.backbone.output_stride,
                "branch_channels": cfg.train.branch_channels, "radius": cfg.train.radius,
                "pair_set": cfg.train.pair_set}

    def build_network(self, spec: dict, pretrained) -> BoundaryNet:
        from pipeline.propagation.irn.network import BoundaryNet

        backbone = build_backbone(spec["backbone"], spec["output_stride"], pretrained=pretrained)
        # checkpoints written before the pair_set setting existed were trained on every pair
        return BoundaryNet(backbone, branch_channels=spec["branch_channels"], radius=spec["radius"],
                           pair_set=spec.get("pair_set", "full"))

    def walk_settings(self, cfg: IrnParams, context: StageContext) -> tuple[dict, bool]:
        walk = cfg.walk
        auto = walk.bg_threshold == "auto"
        return {"beta": walk.beta, "exp_times": walk.exp_times, "radius": walk.radius, "flip": walk.flip,
                "bg_threshold": context.cam_threshold() if auto else walk.bg_threshold}, auto

    def walk(self, network: BoundaryNet, image, cams, keys, device, flip: bool = True, **settings):
        from pipeline.data.transforms import to_image_tensor
        from pipeline.propagation.irn.walk import propagate_boundary

        boundary = network.boundary(to_image_tensor(image).to(device), flip=flip)
        return propagate_boundary(cams, keys, boundary, image_size=image.shape[:2], **settings)

    def describe_walk(self, cfg: IrnParams) -> str:
        return f"beta {cfg.walk.beta:g}, 2^{cfg.walk.exp_times} steps"
