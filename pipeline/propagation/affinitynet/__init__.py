"""AffinityNet (PSA; Ahn & Kwak, CVPR 2018) as a propagation method: confident labels from two CRFs
(:mod:`.labels`), AffinityNet and its affinity loss (:mod:`.network`), the random walk (:mod:`.walk`).

The network and the walk (torch) are imported by the steps that run them: the label step, params
validation and the registry's list of methods import no torch."""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from pipeline.models.backbones import build_backbone
from pipeline.propagation.affinitynet.labels import confident_labels
from pipeline.propagation.affinitynet.params import AffinityNetParams
from pipeline.propagation.base import PropagationMethod, StageContext
from pipeline.propagation.registry import register_propagation

if TYPE_CHECKING:
    from pipeline.propagation.affinitynet.network import AffinityNet


@register_propagation("affinitynet")
class AffinityNetPropagation(PropagationMethod):
    title = "AffinityNet walk"
    Params = AffinityNetParams
    torch_modules = ("pipeline.data.transforms", "pipeline.propagation.affinitynet.network",
                     "pipeline.propagation.affinitynet.walk", "pipeline.propagation.sparse_walk")

    def label_settings(self, cfg: AffinityNetParams, context: StageContext) -> tuple[dict, bool]:
        return {"fg_alpha": cfg.labels.fg_alpha, "bg_alpha": cfg.labels.bg_alpha, "crf": cfg.labels.crf_kwargs(),
                "grid_stride": cfg.train.grid_stride}, False

    def relation_labels(self, image, cams, keys, crf: dict, **settings) -> np.ndarray:
        from pipeline.pseudo_masks.crf import dense_crf

        return confident_labels(image, cams, keys, crf=partial(dense_crf, **crf), **settings)

    def network_spec(self, cfg: AffinityNetParams, context: StageContext) -> dict:
        return {"backbone": context.backbone.name, "output_stride": context.backbone.output_stride,
                "embed_dim": cfg.train.embed_dim, "grid_stride": cfg.train.grid_stride, "radius": cfg.train.radius,
                "pair_set": cfg.train.pair_set}

    def build_network(self, spec: dict, pretrained) -> AffinityNet:
        from pipeline.propagation.affinitynet.network import AffinityNet

        backbone = build_backbone(spec["backbone"], spec["output_stride"], pretrained=pretrained)
        # checkpoints written before the pair_set setting existed were trained (and are walked) on every pair
        return AffinityNet(backbone, embed_dim=spec["embed_dim"], grid_stride=spec["grid_stride"],
                           radius=spec["radius"], pair_set=spec.get("pair_set", "full"))

    def walk_settings(self, cfg: AffinityNetParams, context: StageContext) -> tuple[dict, bool]:
        """``propagate_cam``'s arguments, with ``auto`` resolved from eval_cam's best threshold t: psa's power
        crosses the CAM at t (:func:`~.walk.alpha_for_threshold`), irn's constant is t."""
        from pipeline.propagation.affinitynet.walk import alpha_for_threshold

        walk = cfg.walk
        calibrated = "auto" in (walk.bg_alpha, walk.bg_threshold)
        needed = walk.bg_alpha if walk.bg_mode == "psa" else walk.bg_threshold
        threshold = context.cam_threshold() if needed == "auto" else None
        alpha = alpha_for_threshold(threshold) if walk.bg_alpha == "auto" and threshold is not None else walk.bg_alpha
        constant = threshold if walk.bg_threshold == "auto" and threshold is not None else walk.bg_threshold
        bg = ({"bg_mode": "psa", "bg_alpha": float(alpha)} if walk.bg_mode == "psa"
              else {"bg_mode": "irn", "bg_threshold": float(constant)})
        return {"beta": walk.beta, "logt": walk.logt, **bg}, calibrated

    def walk(self, network: AffinityNet, image, cams, keys, device, **settings):
        import torch

        from pipeline.data.transforms import to_image_tensor
        from pipeline.propagation.affinitynet.walk import propagate_cam
        from pipeline.propagation.sparse_walk import input_fill, pad_to_stride

        stride = network.grid_stride
        with torch.no_grad():
            padded = pad_to_stride(to_image_tensor(image), stride, input_fill(network.backbone.normalize, device))
            features = network(padded[None].to(device))[0]
        return propagate_cam(cams, keys, features, radius=network.radius, grid_stride=stride,
                             pair_set=network.pair_set, **settings)

    def describe_walk(self, cfg: AffinityNetParams) -> str:
        return f"beta {cfg.walk.beta:g}, 2^{cfg.walk.logt} steps"
