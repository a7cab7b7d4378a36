"""Tiles at serving time: a request image cut, its tiles scored, one answer per image.

A model packaged with ``tiles`` in its serving configuration (the ``augmentation.tiles`` it
was trained with, :meth:`~breast_cancer_pipeline.tiles.TileSpec.config`) takes a tile as its
input. The server and the batch command then

1. cut each decoded image with :func:`cut_image`, which calls
   :func:`~breast_cancer_pipeline.tiles.tile_image` (the function training cut its images
   with) once the tiling's memory (:func:`tiling_cost`) is known to fit in the decode budget
   (``inference.serving.decode_memory_mb``): an image too large to tile is a row error;
2. run the network on the tiles of a batch of images, ``inference.batch_size`` tiles per
   forward pass, on whichever runtime serves the model (:func:`score_tiles`);
3. combine each image's tile probabilities into one image row (:func:`aggregate_image_rows`,
   by ``tiles.aggregation``), then recalibrate that row as a whole-image model's is;
4. answer the image's top tiles (:func:`top_tiles`) and, with ``explain``, Grad-CAM on the
   top tile placed on a thumbnail of the whole image (:func:`tile_gradcam_pngs`).

Importing this module is cheap: TensorFlow is imported by Grad-CAM only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from breast_cancer_pipeline.decode_budget import DecodeBudget
from breast_cancer_pipeline.imaging import ImageDecodeError, encode_png, resize_image
from breast_cancer_pipeline.tiles import (
    Tiles,
    TileSpec,
    image_probabilities,
    scaled_size,
    tile_classes,
    tile_count,
    tile_image,
)

#: The answer's column of the top tiles (a list of :data:`TILE_FIELDS` dicts per image).
TOP_TILES_COLUMN = "top_tiles"
#: The answer's columns of the original image's size (to place :data:`TOP_TILES_COLUMN`).
SIZE_COLUMNS = ("image_height", "image_width")
#: The keys of each top tile: its box in the original image's pixels and its score.
TILE_FIELDS = ("top", "left", "height", "width", "score")
#: The :attr:`~breast_cancer_pipeline.imaging.ImageDecodeError.reason` of an image whose
#: tiling does not fit in the decode budget.
TOO_LARGE_TO_TILE = "image too large to tile"
#: Bytes of bookkeeping per grid position while tiling (start offsets and foreground share).
_GRID_BYTES = 24


class ImageTooLargeToTileError(ImageDecodeError):
    """Cutting an image into tiles would hold more memory than the decode budget.

    Attributes:
        shape: The decoded image's ``(height, width, channels)``.
        n_tiles: The tiles it would give.
        cost: What tiling would hold (:func:`tiling_cost`), in bytes.
        limit: The whole decode budget, in bytes.
        parameter: The budget's parameter (``inference.serving.decode_memory_mb``).
    """

    def __init__(
        self,
        name: str,
        shape: tuple[int, ...],
        n_tiles: int,
        cost: int,
        limit: int,
        parameter: str,
    ):
        self.shape, self.n_tiles, self.cost = tuple(shape), n_tiles, cost
        self.limit, self.parameter = limit, parameter
        super().__init__(
            name,
            TOO_LARGE_TO_TILE,
            f"{shape[1]} × {shape[0]} px gives {n_tiles:,} tiles: tiling needs {cost:,} bytes "
            f"of memory, more than {parameter} allows ({limit:,} bytes)",
            f"Downsample the image, or raise {parameter}",
        )

    @property
    def problem(self) -> str:
        """What is wrong: the image was decoded, it cannot be tiled."""
        return f"cannot tile {self.name!r}: {self.reason} ({self.detail})"

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.name, self.shape, self.n_tiles, self.cost, self.limit, self.parameter)
        return (type(self), args)


@dataclass(frozen=True)
class TiledImage:
    """A request image as the tile model reads it (what a row's decode gives).

    Attributes:
        tiles: Its tiles (:func:`~breast_cancer_pipeline.tiles.tile_image`).
        height: The decoded image's height in pixels (the tiles' boxes are in these pixels).
        width: Its width.
        thumbnail: The whole image, its long side at most ``inference.serving.thumbnail_side``
            (kept for rows asking for ``explain`` only), or None.
    """

    tiles: Tiles
    height: int
    width: int
    thumbnail: np.ndarray | None = None


@dataclass(frozen=True)
class TiledAnswer:
    """The model's answer to the tiles of a batch of images.

    Attributes:
        proba: ``(n_images, n_classes)`` served probabilities of the images (aggregated, then
            recalibrated).
        ood: ``(n_images,)`` out-of-distribution scores (the mean of each image's tiles'), or
            None for a model packaged without a score.
        tile_scores: Per image, ``(n_tiles,)`` probabilities of the positive class of its
            tiles (averaged over the test-time views), in the tiles' order.
        tile_attention: Per image, ``(n_tiles,)`` the attention head's weights of its tiles
            (summing to 1), for a model combined by its attention head; else None.
    """

    proba: np.ndarray
    ood: np.ndarray | None
    tile_scores: list[np.ndarray]
    tile_attention: list[np.ndarray] | None = None


@dataclass(frozen=True)
class ExplainedTile:
    """What Grad-CAM on an image's top tile needs once the image is scored.

    Attributes:
        pixels: The top tile, ``uint8`` ``(size, size, C)``.
        box: Its ``(top, left, height, width)`` in the original image's pixels.
        thumbnail: The whole image, small (see :attr:`TiledImage.thumbnail`).
        height: The original image's height.
        width: The original image's width.
    """

    pixels: np.ndarray
    box: tuple[int, int, int, int]
    thumbnail: np.ndarray
    height: int
    width: int


def tiling_cost(shape: tuple[int, ...], spec: TileSpec) -> int:
    """Bytes cutting an image of ``shape`` holds at its peak, the decoded image included.

    The decoded image, its downscaled (or padded) copy, the bookkeeping of every grid
    position and the kept tiles' pixels.

    Args:
        shape: The decoded image's ``(height, width, channels)``.
        spec: The tiling.
    """
    rows, cols, channels = (int(v) for v in shape)
    scaled = scaled_size(shape, spec)
    copy = 0
    if scaled != (rows, cols) or min(scaled) < spec.size:
        copy = max(scaled[0], spec.size) * max(scaled[1], spec.size) * channels
    grid = tile_count(shape, dataclasses.replace(spec, max_per_image=None))
    tiles = tile_count(shape, spec) * spec.size * spec.size * channels
    return rows * cols * channels + copy + grid * _GRID_BYTES + tiles


def cut_image(
    array: np.ndarray,
    name: str,
    spec: TileSpec,
    budget: DecodeBudget | None,
    thumbnail_side: int | None = None,
) -> TiledImage:
    """Cut a decoded image into its tiles, within the decode budget.

    Args:
        array: ``uint8`` ``(H, W, C)`` from :func:`~breast_cancer_pipeline.imaging.decode_image`.
        name: The row's name in errors.
        spec: The served model's tiling.
        budget: The process's decode budget: tiling reserves :func:`tiling_cost` from it
            while it runs (waiting its turn as a decode does); None: no limit.
        thumbnail_side: Also keep a thumbnail whose long side is at most this; None: none.

    Raises:
        ImageTooLargeToTileError: The tiling needs more than the whole budget.
    """
    cost = tiling_cost(array.shape, spec)
    if budget is not None and cost > budget.total_bytes:
        n_tiles = tile_count(array.shape, spec)
        limit = budget.total_bytes
        raise ImageTooLargeToTileError(name, array.shape, n_tiles, cost, limit, budget.parameter)
    with nullcontext() if budget is None else budget.reserve(cost, name):
        tiles = tile_image(array, spec)
        small = None if thumbnail_side is None else thumbnail(array, thumbnail_side)
    return TiledImage(tiles, int(array.shape[0]), int(array.shape[1]), small)


def thumbnail(array: np.ndarray, side: int) -> np.ndarray:
    """The image with its long side at most ``side`` px, its aspect kept (never enlarged)."""
    rows, cols = array.shape[:2]
    scale = min(1.0, side / max(rows, cols))
    if scale == 1.0:
        return array.copy()
    return resize_image(array, (max(1, round(rows * scale)), max(1, round(cols * scale))))


def score_tiles(serving_model: Any, images: Sequence[TiledImage], batch_size: int) -> TiledAnswer:
    """The served answer of each image from its tiles (the model's input is the tile).

    Each forward pass runs ``batch_size`` tiles (of any images) on the model's runtime; the
    test-time views are averaged per tile, the tiles combined per image
    (:func:`aggregate_image_rows`) and the image rows recalibrated (temperature, floor).

    Args:
        serving_model: A :class:`~breast_cancer_pipeline.serving.ServingModel` with ``tiles``.
        images: The batch's cut images.
        batch_size: Tiles per forward pass (``inference.batch_size``).
    """
    spec = serving_model.tiles
    counts = [len(image.tiles) for image in images]
    index = np.repeat(np.arange(len(images)), counts)
    pixels = np.concatenate([image.tiles.pixels for image in images])
    features, averaged = [], []
    for start in range(0, len(pixels), batch_size):
        chunk = pixels[start : start + batch_size]
        chunk_features, first = serving_model.forward(chunk)
        features.append(chunk_features)
        averaged.append(serving_model.averaged_proba(chunk, first=first))
    tile_proba, tile_features = np.concatenate(averaged), np.concatenate(features)
    config = serving_model.config
    positive = config["class_names"].index(config["positive_class"])
    attended = serving_model.attended(tile_features, index, len(images))
    attention = None
    if attended is None:
        image_proba = aggregate_image_rows(
            tile_proba, tile_features, index, len(images), spec, config
        )
    else:
        image_proba, attention = attended[0], np.split(attended[1], np.cumsum(counts)[:-1])
    scores = serving_model.ood_score(tile_features)
    ood = None if scores is None else image_means(scores, index, len(images))
    tile_scores = np.split(tile_proba[:, positive], np.cumsum(counts)[:-1])
    return TiledAnswer(serving_model.calibrate(image_proba), ood, tile_scores, attention)


def aggregate_image_rows(
    tile_proba: np.ndarray,
    features: np.ndarray,
    image_index: np.ndarray,
    n_images: int,
    spec: TileSpec,
    config: Mapping[str, Any],
    serving_model: Any = None,
) -> np.ndarray:
    """The image rows of the tile rows: the one place the served model combines its tiles.

    ``mean``, ``max``, ``top_k_mean`` and ``noisy_or`` are
    :func:`~breast_cancer_pipeline.tiles.image_probabilities` (as reporting combines them:
    :func:`~breast_cancer_pipeline.tiles.aggregate_tiles`, then the internal background
    class of a network trained on mask labels left out). ``attention`` is the attention
    head (``tiles.attention_head`` in the package,
    :meth:`~breast_cancer_pipeline.serving.ServingModel.attended`), which reads the tiles'
    ``features``; a model packaged without its head falls back to ``aggregate_tiles``'s
    ``mean``.

    Args:
        tile_proba: ``(n_tiles, n_tile_classes)`` tile probabilities (test-time views
            averaged), over the tile network's classes.
        features: ``(n_tiles, d)`` the tiles' penultimate features (the first view's).
        image_index: ``(n_tiles,)`` each tile's image row.
        n_images: Images in the batch.
        spec: The served model's tiling.
        config: The serving configuration (``class_names``: the image classes;
            ``positive_class``).
        serving_model: The served model (holds the attention head, when packaged with one).

    Returns:
        ``(n_images, n_classes)`` probabilities over the image classes, rows summing to 1.
    """
    attended = (
        None if serving_model is None else serving_model.attended(features, image_index, n_images)
    )
    if attended is not None:
        return attended[0]
    names = tile_classes(config["class_names"], spec)
    positive_class = config["positive_class"]
    return image_probabilities(tile_proba, image_index, n_images, spec, names, positive_class)


def image_means(values: np.ndarray, image_index: np.ndarray, n_images: int) -> np.ndarray:
    """The mean of each image's tile ``values`` (every image has at least one tile)."""
    weights = np.asarray(values, dtype=np.float64)
    sums = np.bincount(image_index, weights=weights, minlength=n_images)
    return sums / np.bincount(image_index, minlength=n_images)


def top_tiles(
    boxes: np.ndarray, scores: np.ndarray, k: int, attention: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """The ``k`` tiles of highest score, highest first (ties in grid order).

    Args:
        boxes: ``(n, 4)`` the tiles' ``(top, left, height, width)`` in the image's pixels.
        scores: ``(n,)`` their positive-class probabilities.
        k: How many (``tiles.top_k``); fewer when the image has fewer tiles.
        attention: ``(n,)`` the attention head's weights, for a model combined by its head:
            the tiles are then ranked by attention (the tiles the image's answer rests on),
            each dict adding its ``attention``.

    Returns:
        One dict of :data:`TILE_FIELDS` per tile (plain ints and floats: JSON as they are).
    """
    rank = scores if attention is None else attention
    order = np.argsort(-np.asarray(rank), kind="stable")[:k]
    out = [
        dict(zip(TILE_FIELDS, [*(int(v) for v in boxes[j]), float(scores[j])], strict=True))
        for j in order
    ]
    if attention is not None:
        for tile, j in zip(out, order, strict=True):
            tile["attention"] = float(attention[j])
    return out


def explained_tile(
    image: TiledImage, scores: np.ndarray, attention: np.ndarray | None = None
) -> ExplainedTile:
    """The top tile of a scored image and its thumbnail, kept for Grad-CAM.

    The top tile is the one of highest score or, with the attention head's weights
    (``attention``), of highest attention.

    Raises:
        ValueError: The image was cut without a thumbnail.
    """
    if image.thumbnail is None:
        raise ValueError("an image to explain is cut with a thumbnail (cut_image's side)")
    best = int(np.argmax(scores if attention is None else attention))
    box = tuple(int(v) for v in image.tiles.boxes[best])
    return ExplainedTile(image.tiles.pixels[best], box, image.thumbnail, image.height, image.width)


def tile_gradcam_pngs(
    model: Any,
    tiles: Sequence[ExplainedTile],
    class_indices: Sequence[int],
    settings: Mapping[str, Any],
) -> list[bytes]:
    """Grad-CAM of each image's top tile, placed on the image's thumbnail, as PNG bytes.

    The map (:func:`~breast_cancer_pipeline.explain.grad_cam`) is blended over the tile's box
    on the thumbnail (:func:`~breast_cancer_pipeline.explain.overlay`); the rest of the
    thumbnail is left as it is.

    Args:
        model: The Keras tile classifier.
        tiles: The explained images' top tiles.
        class_indices: The class explained for each (its ``thresholded_label``).
        settings: ``reporting.gradcam`` (``layer``, ``alpha``).
    """
    if not tiles:
        return []
    from breast_cancer_pipeline.explain import grad_cam  # noqa: PLC0415 - TensorFlow

    pixels = np.stack([tile.pixels for tile in tiles])
    heat = grad_cam(model, pixels, list(class_indices), layer=settings["layer"])
    return [
        encode_png(placed_overlay(tile, cam, settings["alpha"]))
        for tile, cam in zip(tiles, heat, strict=True)
    ]


def placed_overlay(tile: ExplainedTile, cam: np.ndarray, alpha: float) -> np.ndarray:
    """The thumbnail in RGB with ``cam`` blended over the tile's box (``uint8`` ``(h, w, 3)``)."""
    from breast_cancer_pipeline.explain import overlay  # noqa: PLC0415

    small = tile.thumbnail
    top, bottom, left, right = thumbnail_box(tile.box, (tile.height, tile.width), small.shape)
    out = np.broadcast_to(small, (*small.shape[:2], 3)).copy()
    level = np.clip(np.rint(cam * 255.0), 0, 255).astype(np.uint8)[..., None]
    region = resize_image(level, (bottom - top, right - left))[..., 0] / 255.0
    out[top:bottom, left:right] = overlay(small[top:bottom, left:right], region, alpha)
    return out


def thumbnail_box(
    box: tuple[int, int, int, int], original: tuple[int, int], shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    """A box of the original image in the pixels of its thumbnail of ``shape``.

    Returns:
        ``(top, bottom, left, right)``, at least one pixel each way, within the thumbnail.
    """
    fy, fx = shape[0] / original[0], shape[1] / original[1]
    top, left = min(int(box[0] * fy), shape[0] - 1), min(int(box[1] * fx), shape[1] - 1)
    bottom = min(shape[0], max(top + 1, int(np.ceil((box[0] + box[2]) * fy))))
    right = min(shape[1], max(left + 1, int(np.ceil((box[1] + box[3]) * fx))))
    return top, bottom, left, right
