"""A single image's inspection panel as one PNG (``wsss-pipe inspect --id ID``): photo, the CAM of each
labelled class (titled with its name), the CAM's label map at the threshold, walked maps (AffinityNet, IRN),
pseudo mask, scribbles, ground truth and predictions (multi-stage, single-stage), and a legend of the class colours that occur in them."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.cam.archive import load_cam
from pipeline.data.image_files import load_mask, voc_palette
from pipeline.report.overlay import make_overlay
from pipeline.report.scores import cam_label_map, score, stage_names, walk_keys

LEGEND_ROW = 16
SWATCH = 12


def legend(class_indices: list[int], class_names: list[str], width: int) -> np.ndarray:
    """A white strip of colour swatches with class names, wrapped to ``width`` pixels."""
    font = ImageFont.load_default()
    colours = voc_palette(256)
    entries = [(colours[i], class_names[i] if i < len(class_names) else "ignore") for i in class_indices]
    widths = [SWATCH + 4 + int(font.getlength(name)) + 12 for _, name in entries]
    rows, x = 1, 0
    for w in widths:
        if x + w > width and x > 0:
            rows, x = rows + 1, 0
        x += w
    picture = Image.new("RGB", (width, rows * LEGEND_ROW + 4), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    x, y = 2, 2
    for (colour, name), w in zip(entries, widths):
        if x + w > width and x > 2:
            x, y = 2, y + LEGEND_ROW
        draw.rectangle([x, y + 1, x + SWATCH, y + 1 + SWATCH], fill=tuple(int(c) for c in colour), outline=(0, 0, 0))
        draw.text((x + SWATCH + 4, y + 1), name, fill=(0, 0, 0), font=font)
        x += w
    return np.asarray(picture)


def make_panel(dataset, image_id: str, stages: dict[str, str | None], threshold: float | None,
               class_names: list[str], scribbles: str | None = None) -> np.ndarray:
    """The panel of ``image_id``; ``stages`` maps cam, each walk (:func:`~pipeline.report.scores.walk_keys`), pseudo, pred and single to their files (or None);
    ``scribbles``: the image's scribble PNG (unlabelled 255 in the palette's grey entry 255), or None."""
    image = dataset.load_image(image_id)
    gt = dataset.load_mask(image_id) if dataset.has_masks else None
    n = len(class_names)
    panels: list[tuple[str, np.ndarray]] = []
    shown: set[int] = set()

    def titled(stage_title: str, label: np.ndarray) -> str:
        if gt is None:
            return stage_title
        miou = score(label, gt, n)[1]
        return stage_title if miou is None else f"{stage_title}: mIoU {100 * miou:.1f}"

    if stages.get("cam"):
        cams, keys = load_cam(stages["cam"], n)
        panels += [(f"CAM {class_names[k]}", c) for k, c in zip(keys.tolist(), cams)]
        if threshold is not None:
            label = cam_label_map(cams, keys, threshold)
            panels.append((titled(f"CAM>{threshold:.2f}", label), label))
            shown |= set(np.unique(label).tolist())
    names = stage_names()
    for stage in (*walk_keys(), "pseudo"):
        if stages.get(stage):
            label = load_mask(stages[stage])
            panels.append((titled(names[stage], label), label))
            shown |= set(np.unique(label).tolist())
    if scribbles:
        label = load_mask(scribbles)
        panels.append(("scribbles", label))
        shown |= set(np.unique(label).tolist())
    if gt is not None:
        panels.append(("ground truth", gt))
        shown |= set(np.unique(gt).tolist())
    for stage in ("pred", "single"):
        if stages.get(stage):
            label = load_mask(stages[stage])
            panels.append((titled(names[stage], label), label))
            shown |= set(np.unique(label).tolist())
    strip = make_overlay(image, panels, image_title=image_id)
    key = legend(sorted(shown), class_names, strip.shape[1])
    return np.concatenate([strip, key], axis=0)
