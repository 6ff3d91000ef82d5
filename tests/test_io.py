import numpy as np
import pytest
from PIL import Image

from pipeline.errors import DataError
from pipeline.io import atomic_dir, atomic_path, cam_to_scores, load_cam, load_mask, save_cam, save_mask, voc_palette


def test_voc_palette_known_entries():
    palette = voc_palette()
    assert palette.shape == (256, 3)
    assert tuple(palette[0]) == (0, 0, 0)
    assert tuple(palette[1]) == (128, 0, 0)
    assert tuple(palette[15]) == (192, 128, 128)  # VOC "person"
    assert tuple(palette[255]) == (224, 224, 192)  # VOC void border


def test_mask_palette_png_round_trip(tmp_path):
    mask = np.array([[0, 1, 2], [255, 20, 0]], dtype=np.uint8)
    path = tmp_path / "m.png"
    save_mask(path, mask)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert tuple(image.getpalette()[3:6]) == (128, 0, 0)
    np.testing.assert_array_equal(load_mask(path), mask)


def test_cam_round_trip_is_float16_and_compressed(tmp_path):
    cams = np.random.default_rng(0).random((2, 30, 40)).astype(np.float32)
    path = tmp_path / "a.npz"
    save_cam(path, cams, np.array([3, 7]))
    loaded, keys = load_cam(path)
    np.testing.assert_array_equal(keys, [3, 7])
    np.testing.assert_allclose(loaded, cams, atol=1e-3)
    with np.load(path) as data:
        assert data["cams"].dtype == np.float16
    dense = cam_to_scores(loaded, keys, 10)
    assert dense.shape == (10, 30, 40) and dense[0].max() == 0 and np.allclose(dense[7], loaded[1])


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nope.npz"):
        load_cam(tmp_path / "nope.npz")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        load_mask(bad)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_whole_directory_or_nothing(tmp_path):
    out = tmp_path / "stage"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]
    assert sorted(p.name for p in out.iterdir()) == ["a"]
    with atomic_dir(out) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["c"]
