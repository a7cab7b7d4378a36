"""The Grad-CAM overlay shared by the report's figure and the served ``gradcam_png``."""

import io

import numpy as np
import pytest
from PIL import Image

from breast_cancer_pipeline.explain import overlay, overlay_png


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
