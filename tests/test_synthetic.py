"""The synthetic demo dataset: determinism, VOC layout, label statistics, occlusion and void."""
import hashlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.synthetic import (
    CLASS_NAMES,
    MIN_HEAD_VISIBLE_FRACTION,
    MIN_VISIBLE_FRACTION,
    generate_synthetic,
    render_sample,
)
from pipeline.data.voc import VOCDataset, compute_labels, mask_label_indices
from pipeline.engine.atomic import read_json
from pipeline.errors import ConfigError


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic(root, num_train=150, num_val=20, image_size=64, seed=3)
    return root


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    kwargs = dict(num_train=12, num_val=4, image_size=64)
    generate_synthetic(tmp_path / "a", seed=7, **kwargs)
    generate_synthetic(tmp_path / "b", seed=7, **kwargs)
    generate_synthetic(tmp_path / "c", seed=8, **kwargs)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert len(a) == 2 * 16 + 5  # images, masks, two lists, classes.txt, summary.json, the ownership marker
    assert a == b
    images = [k for k in a if k.startswith("JPEGImages")]
    assert all(a[k] != c[k] for k in images)
    # Regenerating in place replaces the directory whole.
    generate_synthetic(tmp_path / "a", seed=7, num_train=2, num_val=1, image_size=64)
    assert len(list((tmp_path / "a" / "JPEGImages").iterdir())) == 3


def test_layout_reads_through_voc_dataset(dataset_root):
    train = VOCDataset(dataset_root, "train")
    assert train.class_names == ["background", *CLASS_NAMES] and train.num_classes == 6
    assert len(train) == 150 and len(VOCDataset(dataset_root, "val")) == 20
    assert train.mask_dir.name == "SegmentationClass" and train.has_masks
    train.validate(check_pixels=True)
    item = train[0]
    assert item["image"].shape == (64, 64, 3) and item["mask"].shape == (64, 64)
    assert set(np.unique(item["mask"])) <= set(range(6)) | {255}
    assert (dataset_root / "JPEGImages" / "train_00000.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_label_statistics(dataset_root):
    train = VOCDataset(dataset_root, "train")
    labels = compute_labels(train)
    counts = np.zeros(5, int)
    for indices in labels.values():
        counts[np.asarray(indices, int) - 1] += 1
    assert (counts > 0.1 * len(train)).all()  # every class occurs, none dominates away the others
    empty = sum(not v for v in labels.values())
    assert 0.03 * len(train) <= empty <= 0.2 * len(train)
    assert any(len(v) >= 2 for v in labels.values())  # multi-label images exist
    summary = read_json(dataset_root / "summary.json")
    assert summary["train"]["empty_images"] == empty
    # Two objects of one class give one label: per class, labelled images <= objects drawn.
    assert (counts <= np.array(summary["train"]["objects"])).all()
    assert summary["train"]["occluded_objects"] > 0
    void_share = summary["train"]["void_pixels"] / summary["train"]["pixels"]
    assert 0.0 < void_share < 0.1


def test_render_sample_objects_occlude_but_stay_recognisable():
    occluded = void = 0
    for index in range(40):
        rng = np.random.default_rng([0, index])
        image, mask, objects = render_sample(rng, 96, 80, empty_fraction=0.0, void_fraction=0.5)
        assert image.shape == (96, 80, 3) and image.dtype == np.uint8 and mask.shape == (96, 80)
        assert 1 <= len(objects) <= 3
        # Every object keeps most of its head and a good part of its body, so the labels derived from the
        # mask are exactly the drawn classes.
        assert mask_label_indices(mask) == sorted({o.class_index for o in objects})
        assert all(o.visible_fraction >= MIN_VISIBLE_FRACTION for o in objects)
        assert all(o.head_visible_fraction >= MIN_HEAD_VISIBLE_FRACTION for o in objects)
        occluded += sum(o.occluded for o in objects)
        void += bool((mask == 255).any())
    assert occluded >= 5 and void >= 10


def test_empty_images_have_background_only_masks():
    rng = np.random.default_rng(1)
    image, mask, objects = render_sample(rng, 64, 64, empty_fraction=1.0)
    assert objects == [] and not mask.any()
    assert image.std() > 10  # cluttered, not a flat background


def test_size_jitter_and_fewer_classes(tmp_path):
    summary = generate_synthetic(tmp_path / "d", num_train=10, num_val=2, image_size=64, seed=0,
                                 num_classes=2, size_jitter=0.25)
    dataset = VOCDataset(tmp_path / "d", "train")
    assert dataset.num_classes == 3 and len(summary["train"]["objects"]) == 2
    sizes = {dataset.load_image(i).shape[:2] for i in dataset.ids}
    assert len(sizes) > 1 and all(48 <= h <= 64 and 48 <= w <= 64 for h, w in sizes)
    dataset.validate(check_pixels=True)


def test_object_scale_makes_objects_larger():
    def object_share(object_scale):
        masks = [render_sample(np.random.default_rng(i), 96, 96, empty_fraction=0.0, max_objects=1,
                               object_scale=object_scale)[1] for i in range(12)]
        return np.mean([((m > 0) & (m < 255)).mean() for m in masks])

    assert object_share(1.5) > 1.8 * object_share(1.0)


def test_body_cue_colours_bodies_by_class_and_greys_the_clutter():
    """body_cue 1: an object's body pixels take its class hue; the headless clutter is greyer."""
    import colorsys

    def hue_distance(rgb, hue):
        h = np.array([colorsys.rgb_to_hsv(*(c / 255.0))[0] for c in rgb])
        return np.minimum(np.abs(h - hue), 1 - np.abs(h - hue))

    distances, saturation_bg = {0.0: [], 1.0: []}, {0.0: [], 1.0: []}
    for cue in (0.0, 1.0):
        for i in range(8):
            image, mask, objects = render_sample(np.random.default_rng(i), 96, 96, empty_fraction=0.0,
                                                 max_objects=1, void_fraction=0.0, body_cue=cue)
            region = mask == objects[0].class_index
            hue = (objects[0].class_index - 1) / len(CLASS_NAMES)
            distances[cue].append(np.median(hue_distance(image[region][::7].astype(float), hue)))
            background = image[mask == 0][::11].astype(float)
            saturation_bg[cue].append(np.mean([colorsys.rgb_to_hsv(*(c / 255.0))[1] for c in background]))
    assert np.mean(distances[1.0]) < 0.06 < np.mean(distances[0.0])
    assert np.mean(saturation_bg[1.0]) < np.mean(saturation_bg[0.0])


@pytest.mark.parametrize("key, value", [("num_train", 0), ("image_size", 16), ("num_classes", 6),
                                        ("empty_fraction", 1.0), ("void_fraction", -0.1),
                                        ("max_objects", 0), ("size_jitter", 0.5), ("object_scale", 2.5),
                                        ("body_cue", 1.5)])
def test_bad_parameters(tmp_path, key, value):
    with pytest.raises(ConfigError, match=f"synthetic.{key}: invalid value"):
        generate_synthetic(tmp_path / "x", **{key: value})
    assert not (tmp_path / "x").exists()
