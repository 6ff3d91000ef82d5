"""Stage ``overlays``: inspection images for the first ``overlays.count`` train images with labels.

Each ``outputs/overlays/<method>/<id>.png`` shows image, CAM heat map, the walk of every registered
propagation method (:mod:`pipeline.propagation`), pseudo mask, ground truth and the segmentation model's
prediction and the single-stage model's (``train_single``) side by side (panels whose inputs are missing
are left out). dvc.yaml lists the directory as an image plot, so `dvc plots show`
renders them.
"""
from __future__ import annotations

from pipeline.cam.archive import load_cam
from pipeline.data.image_files import load_mask, save_image
from pipeline.engine.atomic import atomic_dir
from pipeline.engine.runtime import resolve_device
from pipeline.propagation import get_propagation, list_propagation
from pipeline.report.overlay import make_overlay
from pipeline.segmentation.inference import predict_label_map
from stages.common import open_split, require
from stages.config import Params
from stages.propagation import prop_dir
from stages.table import output_dir
from stages.segmentation_models import load_model, load_single_model


def run(params: Params) -> int:
    device = resolve_device(params.device)
    dataset, index = open_split(params, params.data.train_split)
    labels = index["splits"][params.data.train_split]["labels"]
    chosen = [i for i in dataset.ids if labels[i]][: params.overlays.count]
    cam_dir = require(output_dir(params, "cam"),
                      f"nothing to show: run `wsss-pipe cam --method {params.method}` first")
    walk_dirs = {get_propagation(name).title: prop_dir(params, "walk", name) for name in list_propagation()}
    crf_dir = output_dir(params, "crf")
    model_path = output_dir(params, "train_seg") / "model.pt"
    model = load_model(model_path, device)[0] if model_path.is_file() else None
    single_path = output_dir(params, "train_single") / "model.pt"
    single = load_single_model(single_path, device)[0] if single_path.is_file() else None
    with atomic_dir(output_dir(params, "overlays")) as out:
        for image_id in chosen:
            image = dataset.load_image(image_id)
            cams = load_cam(cam_dir / f"{image_id}.npz")[0] if (cam_dir / f"{image_id}.npz").is_file() else None
            walks = [(title, directory / f"{image_id}.png") for title, directory in walk_dirs.items()]
            pseudo = crf_dir / f"{image_id}.png"
            panels = [
                ("CAM", cams),
                *[(title, load_mask(path) if path.is_file() else None) for title, path in walks],
                ("pseudo mask", load_mask(pseudo) if pseudo.is_file() else None),
                ("ground truth", dataset.load_mask(image_id) if dataset.has_masks else None),
                ("prediction", predict_label_map(model, image) if model is not None else None),
                ("single stage", predict_label_map(single, image) if single is not None else None),
            ]
            save_image(out / f"{image_id}.png", make_overlay(image, panels))
    return len(chosen)
