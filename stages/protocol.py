"""The evaluation protocol of every figure the eval stages write: which split (name and image count: VOC
train is 1,464 images, train_aug 10,582) and which protocol (single scale, multi-scale + flip, + CRF; the
walk or CRF that made the masks). The references' most common confusion is a number without these
(REFERENCE.md, "the protocols behind numbers"), so each record carries ``split``, ``num_images``,
``protocol`` (a short code, also in metrics.json, so that `dvc metrics show` stays narrow) and
``protocol_description`` (the same in words, details.json).
"""
from __future__ import annotations

from stages.config import Params


def scales_text(scales: list[float], flip: bool) -> str:
    """``single scale`` or ``multi-scale 1,0.5,1.5,2 + flip``."""
    if len(scales) == 1 and scales[0] == 1.0:
        return "single scale" + (" + flip" if flip else "")
    return f"multi-scale {','.join(f'{s:g}' for s in scales)}" + (" + flip" if flip else "")


def scales_code(scales: list[float], flip: bool) -> str:
    """``single_scale``, ``multi_scale_flip``, ...: :func:`scales_text` as a short code."""
    single = len(scales) == 1 and scales[0] == 1.0
    return ("single_scale" if single else "multi_scale") + ("_flip" if flip else "")


def cam_protocol(params: Params) -> dict:
    """``protocol`` and ``protocol_description`` of eval_cam's figure."""
    cfg, sweep = params.cam, params.eval_cam
    return {"protocol": scales_code(cfg.scales, cfg.flip),
            "protocol_description": f"{params.method} CAM, {scales_text(cfg.scales, cfg.flip)}, background "
                                    f"threshold swept {sweep.threshold_min:g}..{sweep.threshold_max:g} (best)"}


def walk_protocol(params: Params, stage: str) -> dict:
    """``protocol`` and ``protocol_description`` of the label maps of ``stage`` (rw, rw_irn, crf)."""
    if stage == "rw":
        rw = params.rw
        return {"protocol": "rw", "protocol_description": f"AffinityNet random walk of the {params.method} CAMs "
                                                          f"(beta {rw.beta:g}, 2^{rw.logt} steps), no CRF"}
    if stage == "rw_irn":
        rw = params.rw_irn
        return {"protocol": "rw_irn", "protocol_description": f"IRN boundary random walk of the {params.method} "
                                                              f"CAMs (beta {rw.beta:g}, 2^{rw.exp_times} steps), no CRF"}
    crf = params.crf
    source = {"cam": f"{params.method} CAM", "rw": "AffinityNet walk", "rw_irn": "IRN walk"}[crf.source]
    return {"protocol": f"{crf.source}_crf" if crf.use_crf else crf.source,
            "protocol_description": f"pseudo masks from the {source}" + (" + dense CRF" if crf.use_crf else ", no CRF")}


def split_fields(split: str, num_images: int) -> dict:
    """``{"split": ..., "num_images": ...}`` of a metrics file."""
    return {"split": split, "num_images": num_images}
