"""Input geometry: sizes, stretch, letterbox and the foreground crop, on tiny planted images."""

import numpy as np
import pytest

from breast_cancer_pipeline.geometry import (
    Geometry,
    as_size,
    fit_image,
    foreground_box,
    geometry_of_arrays,
    letterbox,
    otsu_threshold,
)
from breast_cancer_pipeline.imaging import resize_image


def _film(rng: np.random.Generator) -> np.ndarray:
    """A 200 x 120 'mammogram': dark film, a breast against the right edge, a label, a film edge.

    The breast is a bright half-disc on rows 50..150, columns 70..119; the label a bright
    block of 12 x 20 px in the top-left corner; the film edge a 1 px bright line along the top.
    """
    image = rng.normal(12, 4, (200, 120))
    rows, cols = np.mgrid[:200, :120]
    breast = (rows - 100) ** 2 + (cols - 120) ** 2 < 50**2
    image[breast] = rng.normal(170, 25, breast.sum())
    image[10:22, 8:28] = 250  # the label
    image[0, :] = 255  # the film edge
    return np.clip(image, 0, 255).astype(np.uint8)[..., None]


@pytest.mark.parametrize(
    ("value", "size"), [(224, (224, 224)), ([1024, 512], (1024, 512)), ((64, 32), (64, 32))]
)
def test_as_size_reads_a_side_or_height_and_width(value, size):
    assert as_size(value) == size


@pytest.mark.parametrize("value", [0, -3, 64.5, True, "224", [512], [1, 2, 3], [0, 4], None])
def test_as_size_refuses_anything_else_naming_the_parameter(value):
    with pytest.raises(ValueError, match=r"augmentation\.image_size must be a positive int"):
        as_size(value, "augmentation.image_size")


def test_stretch_is_the_resize_of_before():
    image = np.random.default_rng(0).integers(0, 256, (40, 25, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fit_image(image, Geometry(16, 24)), resize_image(image, (16, 24)))


def test_letterbox_keeps_the_aspect_and_pads_black_around_the_centre():
    image = np.full((40, 20, 3), (200, 100, 50), dtype=np.uint8)
    out = letterbox(image, (20, 20))  # 40 x 20 -> 20 x 10, columns 5..14
    assert out.shape == (20, 20, 3)
    np.testing.assert_array_equal(out[:, 5:15], np.broadcast_to((200, 100, 50), (20, 10, 3)))
    assert not out[:, :5].any() and not out[:, 15:].any()
    wide = letterbox(image[:20], (24, 12))  # 20 x 20 in 24 x 12: 12 x 12, rows 6..17
    assert np.flatnonzero(wide[..., 0].max(axis=1)).tolist() == list(range(6, 18))
    assert np.array_equal(letterbox(image, (40, 20)), image)


def test_otsu_threshold_splits_two_levels_and_none_for_a_flat_image():
    values = np.array([10] * 60 + [200] * 40)
    assert 10 <= otsu_threshold(values) < 200
    assert otsu_threshold(np.full(50, 7)) is None


def test_foreground_box_keeps_the_breast_and_leaves_out_label_and_film_edge():
    image = _film(np.random.default_rng(1))
    top, bottom, left, right = foreground_box(image)
    # The breast (rows 50..150, columns 70..119), not the label (top-left) nor the edge (row 0).
    assert 45 <= top <= 52 and 148 <= bottom <= 155
    assert 65 <= left <= 72 and right == 120
    margin = foreground_box(image, margin=0.05)  # 10 rows and 6 columns more on each side
    assert (margin[0], margin[1], margin[2], margin[3]) == (top - 10, bottom + 10, left - 6, 120)


def test_foreground_on_a_bright_background_is_the_dark_region():
    """A microscopy-like field: white around, darker tissue: the tissue is the foreground."""
    image = np.full((90, 90, 3), 235, dtype=np.uint8)
    image[20:50, 30:80] = (120, 60, 140)
    assert foreground_box(image) == (20, 50, 30, 80)


def test_a_flat_image_is_not_cropped():
    assert foreground_box(np.full((30, 40, 1), 90, np.uint8)) == (0, 30, 0, 40)


def test_crop_foreground_fills_the_input_with_the_breast():
    image = _film(np.random.default_rng(2))
    stretched = fit_image(image, Geometry(64, 32))
    cropped = fit_image(image, Geometry(64, 32, "crop_foreground", 0.0))
    assert cropped.shape == stretched.shape == (64, 32, 1)
    tissue = 110  # between the film (12) and the breast (170)
    assert (cropped > tissue).mean() > 2 * (stretched > tissue).mean()


def test_geometry_travels_in_a_config_and_an_old_config_means_stretch():
    square = Geometry(224, 224, "letterbox", 0.0)
    assert square.config() == {"image_size": 224, "resize": "letterbox", "crop_margin": 0.0}
    tall = Geometry(1024, 512, "crop_foreground", 0.02)
    assert Geometry.from_config(tall.config()) == tall
    assert tall.config()["image_size"] == [1024, 512]
    assert Geometry.from_config({"image_size": 128}) == Geometry(128, 128, "stretch", 0.0)
    with pytest.raises(ValueError, match="resize must be one of"):
        Geometry.from_config({"image_size": 128, "resize": "squash"})


def test_geometry_of_model_input_arrays():
    arrays = {
        "x_train": np.zeros((2, 32, 16, 1), np.uint8),
        "resize": np.array("letterbox"),
        "crop_margin": np.array(0.03),
    }
    assert geometry_of_arrays(arrays) == Geometry(32, 16, "letterbox", 0.03)
    # Arrays made before resize modes existed were stretched.
    assert geometry_of_arrays({"x_train": arrays["x_train"]}) == Geometry(32, 16)
