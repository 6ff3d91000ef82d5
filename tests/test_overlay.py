"""Inspection overlays: layout, palette colours, heat map, skipped panels."""
import numpy as np
import pytest

from pipeline.data.image_files import voc_palette
from pipeline.errors import DataError
from pipeline.report.overlay import GAP, TITLE_HEIGHT, colorize_mask, jet_colormap, make_overlay

H, W = 30, 40


def scene():
    rng = np.random.default_rng(0)
    image = (rng.random((H, W, 3)) * 255).astype(np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[5:20, 10:30] = 12
    mask[0, :] = 255
    cams = np.zeros((2, H, W), np.float32)
    cams[0, 5:20, 10:30] = 1.0
    return image, mask, cams


def panel(overlay, index):
    left = index * (W + GAP)
    return overlay[TITLE_HEIGHT:, left:left + W]


def test_layout_and_mask_colours():
    image, mask, cams = scene()
    prediction = mask.copy()
    prediction[25:, :] = 3
    out = make_overlay(image, [("cam", cams), ("pseudo", mask), ("gt", mask), ("pred", prediction)])
    assert out.dtype == np.uint8 and out.shape == (TITLE_HEIGHT + H, 5 * W + 4 * GAP, 3)
    np.testing.assert_array_equal(panel(out, 0), image)
    palette = voc_palette()
    np.testing.assert_array_equal(panel(out, 2), palette[mask])
    np.testing.assert_array_equal(panel(out, 2)[0, 0], palette[255])
    np.testing.assert_array_equal(panel(out, 2)[10, 15], palette[12])
    np.testing.assert_array_equal(panel(out, 4)[27, 5], palette[3])
    assert (out[:TITLE_HEIGHT] < 128).any()  # some title text was drawn


def test_missing_panels_are_skipped():
    image, mask, cams = scene()
    out = make_overlay(image, [("cam", cams), ("pseudo", mask), ("gt", None), ("pred", None)])
    assert out.shape == (TITLE_HEIGHT + H, 3 * W + 2 * GAP, 3)
    assert make_overlay(image, []).shape == (TITLE_HEIGHT + H, W, 3)


def test_heat_map_is_hot_where_the_cam_is_high():
    image = np.full((H, W, 3), 128, np.uint8)
    _, _, cams = scene()
    heat = panel(make_overlay(image, [("cam", cams)]), 1).astype(int)
    inside, outside = heat[10, 15], heat[25, 35]
    assert inside[0] > inside[2] and outside[2] > outside[0]  # red over the object, blue elsewhere


def test_jet_colormap_end_points():
    colours = jet_colormap(np.array([0.0, 0.5, 1.0, -3.0, 7.0]))
    assert colours.shape == (5, 3) and colours.dtype == np.uint8
    assert colours[0, 2] > 100 and colours[0, 0] == 0         # low -> blue
    assert colours[1, 1] == 255                               # middle -> green peak
    assert colours[2, 0] > 100 and colours[2, 2] == 0         # high -> red
    np.testing.assert_array_equal(colours[3], colours[0])     # clipped
    np.testing.assert_array_equal(colours[4], colours[2])


def test_panels_are_resized_to_the_image():
    image, mask, cams = scene()
    small = mask[::2, ::2]
    out = make_overlay(image, [("cam", cams[:, ::3, ::3]), ("pseudo", small)])
    assert out.shape == (TITLE_HEIGHT + H, 3 * W + 2 * GAP, 3)
    np.testing.assert_array_equal(panel(out, 2)[10, 15], voc_palette()[12])


def test_bad_panels_raise():
    image, _, _ = scene()
    with pytest.raises(DataError, match="mask panel"):
        colorize_mask(np.full((3, 3), 300, np.int32))
    with pytest.raises(DataError, match="image must be"):
        make_overlay(image[..., 0], [])
