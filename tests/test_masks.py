"""Masks: any mode read as a lesion, merged per image, measured on tiles, fitted to the input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from breast_cancer_pipeline.geometry import Geometry, fit_image
from breast_cancer_pipeline.masks import (
    as_mask,
    distinct_values,
    encode_mask,
    fit_mask,
    merge_masks,
    read_mask,
    tile_lesion_share,
)
from breast_cancer_pipeline.tiles import TileSpec, tile_image


def _png(array: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "1", "RGB", "RGBA", "P"])
def test_a_mask_file_of_any_mode_reads_as_its_lesion(mode):
    pixels = np.zeros((12, 20), dtype=np.uint8)
    pixels[3:7, 5:15] = 255
    mask = read_mask(_png(pixels, mode), f"m_{mode}.png")
    assert mask.dtype == bool and mask.shape == (12, 20)
    np.testing.assert_array_equal(mask, pixels > 0)


def test_a_coloured_outline_and_a_zero_one_mask_are_lesions_where_non_zero():
    colour = np.zeros((4, 4, 3), dtype=np.uint8)
    colour[1, 2] = (0, 0, 1)  # a faint blue pixel: grey would round it to 0
    assert as_mask(colour).sum() == 1 and as_mask(colour)[1, 2]
    assert as_mask(np.eye(3, dtype=np.uint8)).sum() == 3


def test_distinct_values_tells_a_binary_mask_from_a_smooth_one():
    binary = np.zeros((6, 6, 3), dtype=np.uint8)
    binary[2:4, 2:4] = 255
    smooth = np.arange(36, dtype=np.uint8).reshape(6, 6)
    assert distinct_values(binary) == 2
    assert distinct_values(np.zeros((3, 3), np.uint8)) == 1
    assert distinct_values(smooth) == 36


def test_merging_two_lesions_keeps_both_and_refuses_another_size():
    first = np.zeros((10, 10), dtype=bool)
    second = np.zeros((10, 10), dtype=np.uint8)
    first[1:3, 1:3] = True
    second[6:9, 6:9] = 255
    merged = merge_masks([first, second])
    assert merged.sum() == 4 + 9 and merged[1, 1] and merged[8, 8]
    with pytest.raises(ValueError, match=r"'a_mask\.png' is 10 x 10 px, 'a_mask_1\.png' 12 x 10"):
        merge_masks([first, np.zeros((10, 12), bool)], ["a_mask.png", "a_mask_1.png"])


def test_an_encoded_mask_is_a_lossless_zero_255_png():
    mask = np.zeros((5, 7), dtype=bool)
    mask[2, 3:6] = True
    image = np.asarray(Image.open(io.BytesIO(encode_mask(mask))))
    assert image.shape == (5, 7) and set(np.unique(image).tolist()) == {0, 255}
    np.testing.assert_array_equal(read_mask(encode_mask(mask)), mask)


def test_tile_lesion_share_is_the_covered_share_of_each_box():
    mask = np.zeros((64, 64), dtype=bool)
    mask[0:16, 0:32] = True  # the top half of the first tile
    boxes = np.array([[0, 0, 32, 32], [0, 32, 32, 32], [8, 8, 8, 8], [48, 48, 32, 32]])
    shares = tile_lesion_share(mask, boxes)
    np.testing.assert_allclose(shares, [0.5, 0.0, 1.0, 0.0])
    assert tile_lesion_share(mask, np.empty((0, 4), np.int64)).shape == (0,)
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        tile_lesion_share(mask, np.zeros((3, 3)))


def test_tile_lesion_share_reads_the_boxes_tile_image_gives():
    image = np.zeros((96, 128, 1), dtype=np.uint8)
    mask = np.zeros((96, 128), dtype=bool)
    mask[64:96, 96:128] = True  # exactly the bottom-right tile
    tiles = tile_image(image, TileSpec(size=32, stride=32))
    shares = tile_lesion_share(mask, tiles.boxes)
    assert shares.max() == 1.0 and np.count_nonzero(shares) == 1
    assert tiles.boxes[int(np.argmax(shares))].tolist() == [64, 96, 32, 32]


def _film_with_lesion() -> tuple[np.ndarray, np.ndarray]:
    """A 120 x 80 dark film, a bright breast on rows 20..99, columns 40..79, a lesion inside."""
    image = np.full((120, 80, 1), 5, dtype=np.uint8)
    image[20:100, 40:80] = 180
    mask = np.zeros((120, 80), dtype=bool)
    mask[50:60, 60:70] = True
    image[mask] = 250
    return image, mask


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "crop_foreground"])
def test_fit_mask_lands_where_fit_image_puts_the_lesion(resize):
    image, mask = _film_with_lesion()
    geometry = Geometry(48, 48, resize)
    fitted = fit_mask(mask, image, geometry)
    placed = fit_image(image, geometry)[..., 0]
    assert fitted.shape == (48, 48) and fitted.dtype == bool
    assert fitted.any()
    # Every fitted pixel holds some of the (brighter) lesion; the brightest input pixel is in it.
    assert placed[fitted].min() > 180
    assert fitted[np.unravel_index(np.argmax(placed), placed.shape)]


def test_crop_foreground_crops_the_mask_with_the_image_box():
    image, mask = _film_with_lesion()
    letterboxed = fit_mask(mask, image, Geometry(48, 48, "letterbox"))
    cropped = fit_mask(mask, image, Geometry(48, 48, "crop_foreground"))
    assert cropped.sum() > 2 * letterboxed.sum()  # the crop drops the empty film: lesion larger


def test_fit_mask_refuses_a_mask_of_another_size():
    image, _ = _film_with_lesion()
    with pytest.raises(ValueError, match=r"mask is 80 x 100 px but its image 80 x 120 px"):
        fit_mask(np.zeros((100, 80), bool), image, Geometry(32, 32))
