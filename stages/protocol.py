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


def walk_protocol(params: Params, source: str) -> dict:
    """``protocol`` and ``protocol_description`` of the label maps of propagation method ``source``'s walk."""
    from pipeline.propagation import get_propagation

    method = get_propagation(source)
    how = method.describe_walk(params.propagation[source])
    return {"protocol": source, "protocol_description": f"{method.title} of the {params.method} CAMs"
                                                        + (f" ({how})" if how else "") + ", no CRF"}


def pseudo_protocol(params: Params) -> dict:
    """``protocol`` and ``protocol_description`` of the pseudo masks of ``crf``."""
    from pipeline.propagation import get_propagation

    crf = params.crf
    origin = f"{params.method} CAM" if crf.source == "cam" else get_propagation(crf.source).title
    return {"protocol": f"{crf.source}_crf" if crf.use_crf else crf.source,
            "protocol_description": f"pseudo masks from the {origin}" + (" + dense CRF" if crf.use_crf else ", no CRF")}


def split_fields(split: str, num_images: int) -> dict:
    """``{"split": ..., "num_images": ...}`` of a metrics file."""
    return {"split": split, "num_images": num_images}
