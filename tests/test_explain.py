"""The Grad-CAM overlay shared by the report's figure and the served ``gradcam_png``."""

import io

import numpy as np
import pytest
from PIL import Image

from breast_cancer_pipeline.explain import overlay, overlay_png, place_map, stitch_maps


def test_overlay_blends_matplotlibs_jet_over_the_image():
    from matplotlib import colormaps

    levels = np.linspace(0.0, 1.0, 64, dtype=np.float32)
    cam = np.tile(levels, (4, 1))
    grey = np.full((4, 64, 1), 200, dtype=np.uint8)
    out = overlay(grey, cam, alpha=0.4)
    assert out.shape == (4, 64, 3) and out.dtype == np.uint8
    jet = colormaps["jet"](levels)[:, :3] * 255.0
    expected = 0.6 * 200 + 0.4 * jet
    # matplotlib quantises its map to 256 levels: within one of them.
    np.testing.assert_allclose(out[0], expected, atol=0.4 * 255 / 256 * 4 + 0.5)
    np.testing.assert_array_equal(out[0], out[3])
    # No heat is dark blue, full heat dark red; alpha 0 is the image itself.
    np.testing.assert_array_equal(overlay(grey, cam, 0.0), np.repeat(grey, 3, axis=-1))
    full = overlay(np.zeros((1, 2, 3), np.uint8), np.array([[0.0, 1.0]]), 1.0)
    np.testing.assert_array_equal(full[0], [[0, 0, 128], [128, 0, 0]])


def test_overlay_keeps_a_colour_image_and_ignores_nan():
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 1] = 100
    out = overlay(rgb, np.full((2, 2), np.nan), alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], [0, 50, 64])  # green kept, blue of "no heat"


def test_overlay_png_is_the_overlay_and_sizes_must_match():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (12, 10, 1)).astype(np.uint8)
    cam = rng.random((12, 10)).astype(np.float32)
    decoded = np.asarray(Image.open(io.BytesIO(overlay_png(image, cam, 0.45))))
    np.testing.assert_array_equal(decoded, overlay(image, cam, 0.45))
    with pytest.raises(ValueError, match=r"\(10, 12\) map does not fit an image of \(12, 10\)"):
        overlay(image, cam.T, 0.45)


def test_tile_maps_are_stitched_at_their_boxes_weighted_the_maximum_where_they_overlap():
    # Two 4 x 4 tile maps cut at scale 2: each covers 8 x 8 px of the 12 x 12 image.
    cams = np.ones((2, 4, 4), dtype=np.float32)
    cams[1] = 0.5  # the second map is half as hot, its weight twice the first's
    boxes = np.array([[0, 0, 8, 8], [4, 4, 8, 8]])
    out = stitch_maps(cams, boxes, (12, 12), weights=np.array([0.6, 1.2]))
    expected = np.zeros((12, 12), dtype=np.float32)
    expected[4:12, 4:12] = 0.6  # 1.2 x 0.5
    expected[:4, :8] = expected[:8, :4] = 0.6
    expected[4:8, 4:8] = 0.6  # the overlap: the larger of 0.6 and 0.6
    out_weighted = stitch_maps(cams, boxes, (12, 12), weights=np.array([0.9, 1.2]))
    assert out_weighted[4:8, 4:8].min() == pytest.approx(0.9)  # the maximum, not the sum
    assert out_weighted[8:, 8:].max() == pytest.approx(0.6)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # Unweighted: each map at full height; pixels of no tile stay 0.
    plain = stitch_maps(cams[:1], boxes[:1], (12, 12))
    assert plain[:8, :8].min() == 1.0 and plain[8:].max() == plain[:, 8:].max() == 0.0


def test_a_tile_map_is_placed_on_a_thumbnail_in_its_pixels():
    box, region = place_map(np.ones((32, 32)), (1504, 2016, 32, 32), (1536, 2048), (384, 512, 3))
    assert box == (376, 384, 504, 512) and region.shape == (8, 8)
    np.testing.assert_allclose(region, 1.0)
