"""Tiling: the grid covers the image, boxes map back, foreground and count limits apply."""

from __future__ import annotations

import numpy as np
import pytest

from breast_cancer_pipeline.tiles import TileSpec, grid_starts, tile_count, tile_image


def test_grid_covers_the_side_with_the_last_tile_at_the_edge():
    assert grid_starts(100, 32, 32) == [0, 32, 64, 68]
    assert grid_starts(96, 32, 32) == [0, 32, 64]
    assert grid_starts(20, 32, 32) == [0]
    assert grid_starts(64, 32, 16) == [0, 16, 32]


def test_tiles_are_the_image_pixels_at_their_boxes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)
    tiles = tile_image(image, TileSpec(size=32, stride=32))
    assert len(tiles) == 3 * 4 == tile_count(image.shape, TileSpec(size=32, stride=32))
    assert tiles.pixels.shape == (12, 32, 32, 3)
    assert not tiles.padded
    for pixels, (top, left, height, width) in zip(tiles.pixels, tiles.boxes, strict=True):
        assert (height, width) == (32, 32)
        np.testing.assert_array_equal(pixels, image[top : top + 32, left : left + 32])
    assert tiles.boxes[-1].tolist() == [38, 68, 32, 32]


def test_scale_gives_boxes_in_the_original_pixels():
    image = np.zeros((128, 256, 1), dtype=np.uint8)
    tiles = tile_image(image, TileSpec(size=32, stride=32, scale=2.0))
    assert len(tiles) == 2 * 4
    assert tiles.boxes[:, 2:].tolist() == [[64, 64]] * 8
    assert tiles.boxes[-1, :2].tolist() == [64, 192]


def test_background_tiles_are_dropped_and_the_limit_keeps_the_most_foreground():
    image = np.zeros((64, 128, 1), dtype=np.uint8)
    image[:, :40] = 200  # tissue on the left third
    spec = TileSpec(size=32, stride=32, min_foreground=0.5)
    tiles = tile_image(image, spec)
    assert sorted(tiles.boxes[:, 1].tolist()) == [0, 0]
    assert (tiles.foreground >= 0.5).all()
    limited = tile_image(image, TileSpec(size=32, stride=32, max_per_image=2))
    assert limited.boxes[:, 1].tolist() == [0, 0]


def test_a_flat_image_keeps_every_tile_and_an_empty_selection_keeps_one():
    flat = np.full((64, 64, 1), 7, dtype=np.uint8)
    assert len(tile_image(flat, TileSpec(size=32, stride=32, min_foreground=0.9))) == 4
    dark = np.zeros((64, 64, 1), dtype=np.uint8)
    dark[30:34, 30:34] = 255  # a speck: opened away, a foreground too small for any tile
    assert len(tile_image(dark, TileSpec(size=32, stride=32, min_foreground=1.0))) == 1


def test_an_image_smaller_than_a_tile_is_padded_and_said_so():
    image = np.full((20, 50, 3), 9, dtype=np.uint8)
    tiles = tile_image(image, TileSpec(size=32, stride=32))
    assert tiles.padded
    assert tiles.pixels.shape == (2, 32, 32, 3)
    assert tiles.pixels[0, 25, 5].tolist() == [0, 0, 0]
    assert tiles.boxes.tolist() == [[0, 0, 20, 32], [0, 18, 20, 32]]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("stride", 0, "augmentation.tiles.stride"),
        ("scale", 0.5, "augmentation.tiles.scale"),
        ("aggregation", "median", "augmentation.tiles.aggregation"),
        ("labels", "boxes", "augmentation.tiles.labels"),
        ("max_per_image", 0, "augmentation.tiles.max_per_image"),
    ],
)
def test_bad_settings_name_the_parameter(field, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        TileSpec(**{"size": 32, "stride": 32, field: value})


def test_spec_round_trips_through_its_config():
    spec = TileSpec(size=64, stride=48, scale=2.0, aggregation="top_k_mean", top_k=5)
    assert TileSpec.from_params(spec.config()) == spec
    assert TileSpec.from_params(None) is None


def test_aggregate_tiles_combines_each_image_s_tiles_by_the_rule():
    from breast_cancer_pipeline.tiles import aggregate_tiles

    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    index = np.array([0, 0, 1, 1])
    mean = aggregate_tiles(proba, index, 2, TileSpec(size=8, stride=8), positive=1)
    np.testing.assert_allclose(mean, [[0.55, 0.45], [0.65, 0.35]])
    top = aggregate_tiles(proba, index, 2, TileSpec(size=8, stride=8, aggregation="max"), 1)
    np.testing.assert_allclose(top[:, 1], [0.8, 0.4])
    with pytest.raises(ValueError, match=r"images \[2\] have no tile"):
        aggregate_tiles(proba, index, 3, TileSpec(size=8, stride=8))


def test_image_probabilities_leave_the_internal_background_out():
    from breast_cancer_pipeline.tiles import image_classes, image_probabilities, tile_classes

    spec = TileSpec(size=16, stride=16, labels="mask", aggregation="mean")
    names = tile_classes(["benign", "malignant"], spec)
    assert names == ["benign", "malignant", "background"]
    assert image_classes(names, spec) == ["benign", "malignant"]
    tiles = np.array([[0.1, 0.1, 0.8], [0.1, 0.5, 0.4], [0.3, 0.1, 0.6]])
    proba = image_probabilities(tiles, np.array([0, 0, 1]), 2, spec, names, "malignant")
    # Image 0: mean (0.1, 0.3, 0.6), background dropped: (0.25, 0.75).
    np.testing.assert_allclose(proba, [[0.25, 0.75], [0.75, 0.25]])
    existing = TileSpec(size=16, stride=16, labels="mask", background_label="benign")
    assert tile_classes(["benign", "malignant"], existing) == ["benign", "malignant"]
    with pytest.raises(ValueError, match="background_label = 'normal' is not one of"):
        tile_classes(
            ["benign", "malignant"], TileSpec(16, 16, labels="mask", background_label="normal")
        )
    with pytest.raises(ValueError, match="already named 'background'"):
        tile_classes(["background", "lesion"], spec)


def test_spec_travels_with_the_arrays():
    from breast_cancer_pipeline.tiles import spec_arrays, spec_of_arrays

    spec = TileSpec(size=48, stride=24, scale=2.0, aggregation="max")
    assert spec_of_arrays(spec_arrays(spec)) == spec
    assert spec_of_arrays({"x_train": np.zeros((1, 4, 4, 1))}) is None
