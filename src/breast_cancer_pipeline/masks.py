"""Lesion masks: the one home of reading, merging and measuring them.

A mask is a boolean ``(H, W)`` array of an image's pixels, True inside a lesion. Whatever
its file holds (0/255 grey, 0/1, a coloured outline filled in, an RGBA PNG), a pixel is in
the lesion when any of its channels is non-zero. The masks of several lesions of one image
are merged into one (logical or). Ingestion stores each image's merged mask as a lossless
0/255 PNG beside the converted image; training (tile labels), the validation gate and the
explanation metrics read it with :func:`read_mask`.

:func:`fit_mask` brings a mask to the model input exactly as
:func:`~breast_cancer_pipeline.geometry.fit_image` brings its image (the same crop box,
computed on the image; nearest-neighbour resizing), so a Grad-CAM on the model input and
the mask line up. :func:`tile_lesion_share` gives each tile's share of lesion pixels.

This module imports numpy and, through :mod:`~breast_cancer_pipeline.imaging` and
:mod:`~breast_cancer_pipeline.geometry`, Pillow and scipy: never TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from breast_cancer_pipeline.geometry import Geometry, foreground_box, letterbox_box
from breast_cancer_pipeline.imaging import decode_image, encode_png


def as_mask(pixels: np.ndarray) -> np.ndarray:
    """A boolean mask from decoded pixels of any mode: a pixel with any non-zero channel.

    Args:
        pixels: ``(H, W)`` or ``(H, W, C)`` array of any dtype (bool, 0/1, 0/255, colour).

    Returns:
        A new ``bool`` array ``(H, W)``.

    Raises:
        ValueError: The array is not 2-D or 3-D.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        return pixels != 0
    if pixels.ndim == 3:
        return (pixels != 0).any(axis=2)
    raise ValueError(f"a mask is (H, W) or (H, W, C), got an array of shape {pixels.shape}")


def distinct_values(pixels: np.ndarray) -> int:
    """How many distinct pixel values (colours, for several channels) ``pixels`` holds.

    A binary mask holds two (one when it is empty or full).
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 3:
        pixels = pixels.reshape(-1, pixels.shape[2])
        return int(len(np.unique(pixels, axis=0)))
    return int(len(np.unique(pixels)))


def read_mask(data: bytes, name: str = "") -> np.ndarray:
    """Decode a mask file (PNG, TIFF, DICOM...) with the shared decoder, as a boolean mask.

    Args:
        data: The file's bytes.
        name: The file's name, for the decoder's hints and messages.

    Returns:
        A ``bool`` array ``(H, W)``.

    Raises:
        ImageDecodeError: The file cannot be decoded (the message names it).
    """
    return as_mask(decode_image(data, name, color_mode="rgb"))


def merge_masks(masks: Sequence[np.ndarray], names: Sequence[str] = ()) -> np.ndarray:
    """One mask for several lesions of an image: a pixel is in it when it is in any.

    Args:
        masks: Boolean (or any-mode, see :func:`as_mask`) masks of one shape.
        names: The masks' file names, quoted when their shapes differ.

    Returns:
        A new ``bool`` array ``(H, W)``.

    Raises:
        ValueError: No mask is given, or their sizes differ.
    """
    if not masks:
        raise ValueError("merge_masks needs at least one mask")
    merged = as_mask(masks[0]).copy()
    for i, pixels in enumerate(masks[1:], start=1):
        mask = as_mask(pixels)
        if mask.shape != merged.shape:
            first = names[0] if names else "mask 0"
            other = names[i] if len(names) > i else f"mask {i}"
            raise ValueError(
                f"the masks of one image differ in size: {first!r} is {merged.shape[1]} x "
                f"{merged.shape[0]} px, {other!r} {mask.shape[1]} x {mask.shape[0]} px; "
                "every mask must have its image's size"
            )
        merged |= mask
    return merged


def encode_mask(mask: np.ndarray, *, compress_level: int = 6) -> bytes:
    """A mask as a lossless single-channel PNG, 0 outside and 255 inside."""
    pixels = np.where(as_mask(mask), np.uint8(255), np.uint8(0))[..., None]
    return encode_png(pixels, compress_level=compress_level)


def tile_lesion_share(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The share of each tile box that the mask covers.

    Args:
        mask: ``bool`` array ``(H, W)`` in the image's pixels.
        boxes: ``(n, 4)`` boxes ``(top, left, height, width)`` in the same pixels, as
            :func:`~breast_cancer_pipeline.tiles.tile_image` gives them. A box's part outside
            the mask counts as not covered.

    Returns:
        ``float64`` array ``(n,)`` within ``[0, 1]``.

    Raises:
        ValueError: ``boxes`` is not ``(n, 4)``.
    """
    mask = as_mask(mask)
    boxes = np.asarray(boxes, dtype=np.int64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (n, 4) [top, left, height, width], got {boxes.shape}")
    rows, cols = mask.shape
    table = np.zeros((rows + 1, cols + 1), dtype=np.int64)  # summed-area table
    table[1:, 1:] = mask.cumsum(axis=0, dtype=np.int64).cumsum(axis=1)
    top, left = np.clip(boxes[:, 0], 0, rows), np.clip(boxes[:, 1], 0, cols)
    bottom = np.clip(boxes[:, 0] + boxes[:, 2], 0, rows)
    right = np.clip(boxes[:, 1] + boxes[:, 3], 0, cols)
    covered = table[bottom, right] - table[top, right] - table[bottom, left] + table[top, left]
    area = np.maximum(boxes[:, 2] * boxes[:, 3], 1)
    return covered / area


def fit_mask(mask: np.ndarray, image: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Bring a mask to the model input as ``geometry.fit_image`` brings its image.

    ``crop_foreground`` crops both to the box found on the *image*; ``letterbox`` places the
    mask where the image goes (the padding is outside the lesion); resizing is nearest
    neighbour, so the result stays a mask.

    Args:
        mask: ``bool`` (or any-mode) array ``(H, W)`` of the image's size.
        image: The decoded image, ``uint8`` ``(H, W, C)``.
        geometry: The input size and resize mode.

    Returns:
        A ``bool`` array ``(geometry.height, geometry.width)``.

    Raises:
        ValueError: The mask's size is not the image's.
    """
    mask = as_mask(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(
            f"the mask is {mask.shape[1]} x {mask.shape[0]} px but its image "
            f"{image.shape[1]} x {image.shape[0]} px; a mask must have its image's size"
        )
    if geometry.resize == "stretch":
        return resize_nearest(mask, geometry.size)
    if geometry.resize == "crop_foreground":
        top, bottom, left, right = foreground_box(image, geometry.crop_margin)
        mask = mask[top:bottom, left:right]
    top, left, height, width = letterbox_box(mask.shape, geometry.size)
    out = np.zeros(geometry.size, dtype=bool)
    out[top : top + height, left : left + width] = resize_nearest(mask, (height, width))
    return out


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D mask to ``(height, width)`` by nearest neighbour (pixel centres)."""
    height, width = size
    rows, cols = mask.shape
    row_index = np.minimum(((np.arange(height) + 0.5) * rows / height).astype(np.int64), rows - 1)
    col_index = np.minimum(((np.arange(width) + 0.5) * cols / width).astype(np.int64), cols - 1)
    return mask[np.ix_(row_index, col_index)]
