"""Per-image files of the inspection report, written by one worker call per image.

For image ``<id>`` the report directory gets ``thumbs/<id>.jpg`` (the index row's thumbnail),
``images/<id>.jpg`` (the detail view's photo, longest side at most ``view_size``) and ``data/img/<id>.js``:
the CAMs (one uint8 channel per labelled class, 0..255 = 0..1) and label maps (ground truth, random walks,
pseudo mask, predictions, scribbles; 255 = ignore / unlabelled) at the view size, zlib-compressed and base64-encoded, wrapped in a
function call so that the page loads it with a ``<script>`` tag: a page opened from disk may not ``fetch``
files or read pixels back from images, so the browser decodes these arrays (``DecompressionStream``) and
draws heat maps, masks, the re-thresholded CAM and the changed-pixel views itself.
"""
from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.cam.archive import load_cam
from pipeline.data.image_files import load_image, load_mask
from pipeline.report.scores import cam_label_map, score

JPEG_QUALITY = 85


def view_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) with the longest side at most ``max_side``, aspect kept; never enlarged."""
    factor = min(1.0, max_side / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def resize_labels(label: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if label.shape == shape:
        return label.astype(np.uint8)
    return np.asarray(Image.fromarray(label.astype(np.uint8)).resize(shape[::-1], Image.NEAREST))


def resize_scores(cams: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, H, W) float scores in [0, 1] -> (K, h, w) uint8 (bilinear)."""
    out = np.empty((cams.shape[0],) + shape, dtype=np.uint8)
    for k, channel in enumerate(cams):
        if channel.shape != shape:
            channel = np.asarray(Image.fromarray(channel.astype(np.float32), mode="F").resize(shape[::-1],
                                                                                              Image.BILINEAR))
        out[k] = np.clip(np.rint(channel * 255.0), 0, 255).astype(np.uint8)
    return out


def encode(array: np.ndarray) -> str:
    """uint8 array -> base64 of its zlib-compressed bytes (row-major)."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(array, dtype=np.uint8).tobytes(), 6)).decode("ascii")


def _save_jpeg(path: Path, image: np.ndarray, shape: tuple[int, int]) -> None:
    picture = Image.fromarray(image)
    if image.shape[:2] != shape:
        picture = picture.resize(shape[::-1], Image.BILINEAR)
    picture.save(path, format="JPEG", quality=JPEG_QUALITY)


def inspect_image(job: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Write one image's files and score its stages.

    ``job``: id, split, out (report directory), image, gt (path or None), num_classes, threshold (CAM),
    thumb_size, view_size, stages ({stage: path or None}: cam .npz, each walk/pseudo/pred/single .png),
    scribbles (path or None) and methods
    ({method: {"cam": path, "threshold": t, "pseudo": path or None}}) for the side-by-side view.
    Returns (the row for the index: id, split, classes, scores, size; {stage: confusion}).
    """
    image_id, n = job["id"], job["num_classes"]
    out = Path(job["out"])
    image = load_image(job["image"])
    gt = load_mask(job["gt"]) if job["gt"] else None
    height, width = image.shape[:2]
    view = view_shape(height, width, job["view_size"])
    _save_jpeg(out / "thumbs" / f"{image_id}.jpg", image, view_shape(height, width, job["thumb_size"]))
    _save_jpeg(out / "images" / f"{image_id}.jpg", image, view)

    scores: dict[str, float | None] = {}
    confusions: dict[str, np.ndarray] = {}
    data: dict = {"id": image_id, "split": job["split"], "width": view[1], "height": view[0], "masks": {}}
    if gt is not None:
        data["masks"]["gt"] = encode(resize_labels(gt, view))

    def add_score(stage: str, label: np.ndarray) -> None:
        if gt is not None:
            confusions[stage], scores[stage] = score(label, gt, n)

    for stage, path in job["stages"].items():
        if path is None:
            continue
        if stage == "cam":
            cams, keys = load_cam(path, n)
            data["cam"] = {"keys": keys.tolist(), "threshold": job["threshold"],
                           "maps": [encode(c) for c in resize_scores(cams, view)]}
            if job["threshold"] is not None:
                add_score("cam", cam_label_map(cams, keys, job["threshold"]))
        else:
            label = load_mask(path)
            data["masks"][stage] = encode(resize_labels(label, view))
            add_score(stage, label)

    if job.get("scribbles"):  # the single-stage branch's labels: shown, never scored (255 = unlabelled)
        data["masks"]["scribbles"] = encode(resize_labels(load_mask(job["scribbles"]), view))

    data["methods"] = []
    for method, paths in job["methods"].items():
        cams, keys = load_cam(paths["cam"], n)
        entry = {"method": method, "keys": keys.tolist(), "threshold": paths["threshold"],
                 "maps": [encode(c) for c in resize_scores(cams, view)], "scores": {}}
        if gt is not None and paths["threshold"] is not None:
            entry["scores"]["cam"] = score(cam_label_map(cams, keys, paths["threshold"]), gt, n)[1]
        if paths.get("pseudo"):
            pseudo = load_mask(paths["pseudo"])
            entry["pseudo"] = encode(resize_labels(pseudo, view))
            if gt is not None:
                entry["scores"]["pseudo"] = score(pseudo, gt, n)[1]
        data["methods"].append(entry)

    (out / "data" / "img" / f"{image_id}.js").write_text(
        f"inspectImage({json.dumps(data, separators=(',', ':'))});\n")
    classes = sorted(set(job["labels"]) | (set(np.unique(gt).tolist()) - {0, 255} if gt is not None else set()))
    row = {"id": image_id, "split": job["split"], "classes": classes, "scores": scores,
           "size": [width, height]}
    return row, confusions
