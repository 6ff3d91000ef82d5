import os
import stat

import numpy as np
import pytest
from PIL import Image

from pipeline.cam.archive import cam_to_scores, load_cam, save_cam
from pipeline.data.image_files import load_mask, save_mask, voc_palette
from pipeline.engine.atomic import OWNER_MARKER, atomic_dir, atomic_path
from pipeline.errors import DataError


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
    assert sorted(p.name for p in out.iterdir()) == [OWNER_MARKER, "a"]
    with atomic_dir(out) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == [OWNER_MARKER, "c"]


def _good_cam(path):
    save_cam(path, np.full((2, 6, 8), 0.5, dtype=np.float32), np.array([1, 3]))
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["empty", "truncated", "bitflip", "not_zip"])
def test_damaged_cam_file_is_one_line_error_naming_it(tmp_path, damage):
    path = tmp_path / "2008_000123.npz"
    data = _good_cam(path)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "bitflip":
        flipped = bytearray(data)
        for offset in range(60, len(flipped) - 120, 7):  # inside the compressed stream
            flipped[offset] ^= 0xFF
        path.write_bytes(bytes(flipped))
    else:
        path.write_bytes(b"hello, not a zip file at all" * 10)
    with pytest.raises(DataError, match="2008_000123.npz") as info:
        load_cam(path)
    assert "\n" not in str(info.value)


def test_cam_keys_out_of_range_or_duplicated_are_rejected(tmp_path):
    path = tmp_path / "a.npz"
    save_cam(path, np.zeros((2, 4, 4)), np.array([1, 30]))
    load_cam(path)  # within the default 0..254
    with pytest.raises(DataError, match=r"a.npz: class keys \[1, 30\].*0..20"):
        load_cam(path, num_classes=21)
    save_cam(path, np.zeros((2, 4, 4)), np.array([3, 3]))
    with pytest.raises(DataError, match="distinct"):
        load_cam(path)


def test_outputs_get_normal_permissions_under_umask_022(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "stage") as out:
            (out / "x.txt").write_text("x")
        save_mask(tmp_path / "stage2" / "m.png", np.zeros((2, 2), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "stage").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "stage2" / "m.png").stat().st_mode) == 0o644


def test_failed_stage_leaves_no_temporaries_nor_empty_parents(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "outputs" / "cam" / "seam") as out:
            (out / "a.npz").write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_temporaries_of_a_killed_run_are_removed_by_the_next_run(tmp_path):
    stale = tmp_path / ".cam.abc123.tmp"
    stale.mkdir()
    (stale / "a.npz").write_text("left by SIGKILL")
    (tmp_path / ".cam.old").mkdir()
    with atomic_dir(tmp_path / "cam") as out:
        (out / "b.npz").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam"]
