"""The built-in demo dataset: textured "creatures" whose class is told only by a small head.

Every object is a textured elliptical body (texture family, colours, size and pose independent of the
class) with a head at one end of its major axis; the head's silhouette and hue are class-specific. Headless
bodies with the same textures clutter the background, so the body is no evidence of any class and a
classifier trained on image-level labels learns the head: its CAM covers the discriminative part while the
ground truth covers head and body. 1-3 objects per image occlude each other; ~10% of images hold no object;
some object boundaries get a void (255) ring as in VOC. ``body_cue`` > 0 gives that share of the bodies their
class's hue (and greys the clutter), so that the body becomes weaker evidence of the class than the head. The
design is described in docs/synthetic_dataset.md.

Output: a VOC-layout dataset (see :mod:`pipeline.data.voc`), byte-identical for a given seed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.data.image_files import save_image, save_mask
from pipeline.data.synthetic_drawing import ellipse, head_masks, paint, random_colour, smooth_noise, texture_pattern
from pipeline.engine.atomic import atomic_dir, write_json
from pipeline.errors import ConfigError

CLASS_NAMES: tuple[str, ...] = ("roundhead", "boxhead", "arrowhead", "ringhead", "crosshead")
HEAD_SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "ring", "cross")
MAX_LAYOUT_TRIES = 30
MIN_VISIBLE_FRACTION = 0.35  # of an object's in-frame silhouette left after occlusion
MIN_HEAD_VISIBLE_FRACTION = 0.6


@dataclass(frozen=True)
class SyntheticObject:
    """One rendered object: its class (1-based) and how much of it the others hide."""

    class_index: int
    visible_fraction: float
    head_visible_fraction: float

    @property
    def occluded(self) -> bool:
        return self.visible_fraction < 0.999


# ------------------------------------------------------------------ one image
def _body_colours(rng):
    """The two colours of a body or clutter texture: any hue, muted, so that saturated heads stand out."""
    return random_colour(rng, saturation=(0.0, 0.55)), random_colour(rng, saturation=(0.0, 0.55))


def _clutter_colours(rng, body_cue: float):
    """Colours of a headless clutter body: as an object's body, or, with class-coloured bodies
    (``body_cue`` > 0), greyer by that fraction so that a body's colour is evidence of its class."""
    if body_cue <= 0:
        return _body_colours(rng)
    top = 0.55 * (1.0 - body_cue)
    return random_colour(rng, saturation=(0.0, top)), random_colour(rng, saturation=(0.0, top))


def _object_body_colours(rng, class_hue: float, body_cue: float):
    """An object's two body colours: any muted hue, or with probability ``body_cue`` the class's own hue
    (muted, so that the head stays the most salient part)."""
    if body_cue <= 0 or rng.random() >= body_cue:
        return _body_colours(rng)
    hue = class_hue + rng.uniform(-0.04, 0.04)
    return (random_colour(rng, hue=hue, saturation=(0.35, 0.6), value=(0.35, 0.65)),
            random_colour(rng, hue=hue, saturation=(0.35, 0.6), value=(0.65, 0.95)))


def _render_background(rng, yy, xx, scale, body_cue: float = 0.0) -> np.ndarray:
    height, width = yy.shape
    field = smooth_noise(rng, height, width, cells=int(rng.integers(2, 6)))[..., None]
    canvas = random_colour(rng, saturation=(0.1, 0.6)) * (1 - field) + random_colour(rng, saturation=(0.1, 0.6)) * field
    # Headless bodies and patches with the objects' texture families.
    for _ in range(int(rng.integers(2, 6))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        a = rng.uniform(0.1, 0.3) * scale
        if rng.random() < 0.5:
            region = ellipse(yy, xx, cy, cx, a, a * rng.uniform(0.4, 0.8), rng.uniform(0, np.pi))
        else:
            angle = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
            v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
            region = (np.abs(u) <= a) & (np.abs(v) <= a * rng.uniform(0.3, 1.0))
        paint(canvas, region, texture_pattern(rng, yy, xx, scale), *_clutter_colours(rng, body_cue))
    # Saturated thin bars of any hue: colour alone does not reveal a head.
    for _ in range(int(rng.integers(0, 3))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        a = rng.uniform(0.05, 0.12) * scale
        region = ellipse(yy, xx, cy, cx, a, a * rng.uniform(0.15, 0.3), rng.uniform(0, np.pi))
        canvas[region] = random_colour(rng, saturation=(0.7, 1.0), value=(0.7, 1.0))
    return canvas


def _sample_object(rng, height, width, scale, previous, object_scale=1.0):
    """Pose of one object, inside the frame (head fully inside), near an earlier one half of the time;
    ``object_scale`` multiplies the body (and so the head) size."""
    for _ in range(100):
        a = rng.uniform(0.13, 0.22) * scale * object_scale
        b = a * rng.uniform(0.45, 0.7)
        radius = max(rng.uniform(0.65, 0.85) * b, 0.06 * scale * object_scale)
        angle = rng.uniform(0, 2 * np.pi)
        if previous and rng.random() < 0.5:
            anchor = previous[int(rng.integers(len(previous)))]
            offset = rng.uniform(0.5, 1.1) * (anchor["a"] + a)
            direction = rng.uniform(0, 2 * np.pi)
            cy, cx = anchor["cy"] + offset * np.sin(direction), anchor["cx"] + offset * np.cos(direction)
        else:
            cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
        hy = cy + (a + 0.6 * radius) * np.sin(angle)
        hx = cx + (a + 0.6 * radius) * np.cos(angle)
        head_inside = radius <= hy <= height - 1 - radius and radius <= hx <= width - 1 - radius
        if head_inside and 0 <= cy < height and 0 <= cx < width:
            return {"cy": cy, "cx": cx, "a": a, "b": b, "radius": radius, "angle": angle, "hy": hy, "hx": hx}
    raise RuntimeError("could not place an object inside the frame")


def render_sample(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_classes: int = len(CLASS_NAMES),
    empty_fraction: float = 0.1,
    void_fraction: float = 0.5,
    max_objects: int = 3,
    object_scale: float = 1.0,
    body_cue: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, list[SyntheticObject]]:
    """One image (H, W, 3) uint8, its mask (H, W) uint8 (0 bg, 1..num_classes, 255 void) and its objects."""
    scale = float(min(height, width))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    canvas = _render_background(rng, yy, xx, scale, body_cue)
    count = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))

    instance = np.zeros((height, width), dtype=np.int32)
    objects: list[SyntheticObject] = []
    for attempt in range(MAX_LAYOUT_TRIES):
        poses: list[dict] = []
        for _ in range(count):
            poses.append(_sample_object(rng, height, width, scale, poses, object_scale))
        shapes = []
        instance[:] = 0
        for k, pose in enumerate(poses, start=1):
            body = ellipse(yy, xx, pose["cy"], pose["cx"], pose["a"], pose["b"], pose["angle"])
            shape_name = HEAD_SHAPES[int(rng.integers(num_classes))]
            head, marking = head_masks(shape_name, yy, xx, pose["hy"], pose["hx"], pose["radius"], pose["angle"])
            instance[body | head] = k
            shapes.append((shape_name, body, head, marking))
        objects = []
        for k, (shape_name, body, head, _) in enumerate(shapes, start=1):
            silhouette = body | head
            objects.append(SyntheticObject(
                class_index=HEAD_SHAPES.index(shape_name) + 1,
                visible_fraction=float((instance[silhouette] == k).mean()),
                head_visible_fraction=float((instance[head] == k).mean()),
            ))
        if all(o.visible_fraction >= MIN_VISIBLE_FRACTION and o.head_visible_fraction >= MIN_HEAD_VISIBLE_FRACTION
               for o in objects):
            break
        if attempt >= MAX_LAYOUT_TRIES // 2:  # crowded: try with one object fewer
            count = max(1, count - 1)
    else:
        raise RuntimeError("no valid object layout found")

    # Painted in instance order, so later objects occlude earlier ones as in the instance map.
    for obj, (shape_name, body, head, marking) in zip(objects, shapes):
        class_hue = (obj.class_index - 1) / len(HEAD_SHAPES)
        paint(canvas, body, texture_pattern(rng, yy, xx, scale), *_object_body_colours(rng, class_hue, body_cue))
        hue = class_hue + rng.uniform(-0.03, 0.03)
        canvas[head] = random_colour(rng, hue=hue, saturation=(0.75, 1.0), value=(0.75, 1.0))
        canvas[head & marking] = random_colour(rng, saturation=(0.0, 0.2), value=(0.0, 0.25))
    class_of = np.array([0] + [o.class_index for o in objects], dtype=np.uint8)
    mask = class_of[instance]
    for k in range(1, len(objects) + 1):
        if rng.random() < void_fraction:
            region = instance == k
            half_width = int(rng.integers(1, 3))
            ring = (ndimage.binary_dilation(region, iterations=half_width)
                    & ~ndimage.binary_erosion(region, iterations=half_width))
            mask[ring] = 255

    light = 1.0 + 0.25 * (smooth_noise(rng, height, width, cells=2)[..., None] - 0.5)
    canvas = canvas * light + rng.normal(0.0, 4.0, canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return image, mask, objects


# ------------------------------------------------------------------ the dataset
def _check_params(num_train, num_val, image_size, num_classes, empty_fraction, void_fraction, max_objects, size_jitter,
                  object_scale=1.0, body_cue=0.0):
    checks = {
        "num_train": num_train >= 1,
        "num_val": num_val >= 1,
        "image_size": image_size >= 32,
        "num_classes": 1 <= num_classes <= len(HEAD_SHAPES),
        "empty_fraction": 0.0 <= empty_fraction < 1.0,
        "void_fraction": 0.0 <= void_fraction <= 1.0,
        "max_objects": 1 <= max_objects <= 6,
        "size_jitter": 0.0 <= size_jitter < 0.5,
        "object_scale": 0.5 <= object_scale <= 2.0,
        "body_cue": 0.0 <= body_cue <= 1.0,
    }
    values = locals()
    for key, ok in checks.items():
        if not ok:
            raise ConfigError(f"synthetic.{key}: invalid value {values[key]!r}")


def generate_synthetic(
    out_root: str | os.PathLike,
    num_train: int = 300,
    num_val: int = 100,
    image_size: int = 128,
    seed: int = 0,
    num_classes: int = len(CLASS_NAMES),
    empty_fraction: float = 0.1,
    void_fraction: float = 0.5,
    max_objects: int = 3,
    size_jitter: float = 0.0,
    object_scale: float = 1.0,
    body_cue: float = 0.0,
) -> dict:
    """Write the demo dataset in VOC layout under ``out_root`` (replaced whole, atomically).

    Image ``i`` of a split is drawn from its own generator seeded with (seed, split, i), so a given seed
    always gives byte-identical files. ``size_jitter`` > 0 draws each side from
    [image_size * (1 - size_jitter), image_size]; ``object_scale`` multiplies every object's size. Returns
    (and writes as ``summary.json``) statistics: per split the image count, empty images, objects per class, occluded objects and the void pixel share.
    """
    _check_params(num_train, num_val, image_size, num_classes, empty_fraction, void_fraction, max_objects, size_jitter,
                  object_scale, body_cue)
    summary = {"seed": seed, "image_size": image_size, "class_names": ["background", *CLASS_NAMES[:num_classes]]}
    with atomic_dir(out_root) as tmp:
        tmp = Path(tmp)
        (tmp / "classes.txt").write_text("\n".join(summary["class_names"]) + "\n")
        for split_code, (split, count) in enumerate((("train", num_train), ("val", num_val))):
            ids = [f"{split}_{i:05d}" for i in range(count)]
            stats = {"images": count, "empty_images": 0, "objects": [0] * num_classes,
                     "occluded_objects": 0, "void_pixels": 0, "pixels": 0}
            for index, image_id in enumerate(ids):
                rng = np.random.default_rng([seed, split_code, index])
                height = width = image_size
                if size_jitter > 0:
                    low = int(round(image_size * (1 - size_jitter)))
                    height, width = (int(v) for v in rng.integers(low, image_size + 1, size=2))
                image, mask, objects = render_sample(
                    rng, height, width, num_classes, empty_fraction, void_fraction, max_objects, object_scale, body_cue
                )
                save_image(tmp / "JPEGImages" / f"{image_id}.jpg", image, quality=95)
                save_mask(tmp / "SegmentationClass" / f"{image_id}.png", mask)
                stats["empty_images"] += not objects
                stats["occluded_objects"] += sum(o.occluded for o in objects)
                for o in objects:
                    stats["objects"][o.class_index - 1] += 1
                stats["void_pixels"] += int((mask == 255).sum())
                stats["pixels"] += int(mask.size)
            list_path = tmp / "ImageSets" / "Segmentation" / f"{split}.txt"
            list_path.parent.mkdir(parents=True, exist_ok=True)
            list_path.write_text("\n".join(ids) + "\n")
            summary[split] = stats
        write_json(tmp / "summary.json", summary)
    return summary
