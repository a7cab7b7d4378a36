"""Tiles: a large image cut into squares the network sees at (near) full resolution.

The one home of tiling (``augmentation.tiles``). Training's tile arrays, reporting (through
the arrays), the batch command and the server all call :func:`tile_image` with the same
:class:`TileSpec`, so a served image is cut exactly as the training images were.

How an image is cut:

1. The image is downscaled by ``scale`` (1 = full resolution, 2 = half the side).
2. An image smaller than one tile on a side is padded with 0 up to the tile
   (:attr:`Tiles.padded` says so).
3. A grid of ``size`` x ``size`` tiles every ``stride`` px covers the image; the last row
   and column are aligned to the image's edge, so no pixel is left out.
4. Each tile's foreground share comes from the image's foreground mask
   (:func:`~breast_cancer_pipeline.geometry.foreground_mask`: Otsu on a small copy, the
   background being the class that holds the border, dark around a mammogram, light around
   a microscopy field). Tiles below ``min_foreground`` are dropped, unless that would drop
   them all: then the most-foreground tile is kept.
5. At most ``max_per_image`` tiles are kept: those with the most foreground, ties in grid order.

Boxes are given in the original image's pixels: ``(top, left, height, width)``.

This module imports numpy and, through :mod:`~breast_cancer_pipeline.geometry`, Pillow and
scipy: never TensorFlow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from breast_cancer_pipeline.geometry import foreground_mask
from breast_cancer_pipeline.imaging import resize_image

#: Rules that combine an image's tile probabilities (``augmentation.tiles.aggregation``).
TILE_AGGREGATIONS: tuple[str, ...] = ("mean", "max", "top_k_mean", "noisy_or", "attention")

#: Where a tile's label comes from (``augmentation.tiles.labels``).
TILE_LABELS: tuple[str, ...] = ("image", "mask")

#: The attention-MIL head's settings (``augmentation.tiles.attention``) a key left out takes:
#: :mod:`breast_cancer_pipeline.training.attention` says what each means.
ATTENTION_DEFAULTS: dict[str, Any] = {
    "hidden": 64,
    "epochs": 30,
    "learning_rate": 1e-3,
    "patience": 5,
    "batch_size": 16,
    "max_tiles": None,
}


def uses_attention(augmentation: Mapping[str, Any]) -> bool:
    """Whether the ``augmentation`` parameters tile images and combine them by attention."""
    tiles = augmentation.get("tiles")
    return bool(tiles) and tiles.get("aggregation") == "attention"


def attention_settings(tiles: Mapping[str, Any]) -> dict[str, Any]:
    """``augmentation.tiles.attention`` with :data:`ATTENTION_DEFAULTS` for the keys left out."""
    return {**ATTENTION_DEFAULTS, **(tiles.get("attention") or {})}


@dataclass(frozen=True)
class TileSpec:
    """How images are cut into tiles and the tiles' answers combined.

    Attributes:
        size: Tile side in pixels (after ``scale``); also the network's input side.
        stride: Step between tiles in pixels (after ``scale``); ``stride < size`` overlaps.
        scale: Downscale factor applied before tiling (1 = full resolution).
        min_foreground: Tiles whose foreground share is below this are dropped.
        max_per_image: At most this many tiles per image (the most foreground), or None.
        aggregation: One of :data:`TILE_AGGREGATIONS`.
        top_k: Tiles averaged by ``top_k_mean``.
        labels: One of :data:`TILE_LABELS`: every tile takes its image's label, or a lesion
            mask decides.
        min_lesion: With ``labels: mask``, the share of a tile the mask must cover for the
            tile to take its image's label.
        background_label: With ``labels: mask``, the class of tiles outside lesions (an
            existing class), or None for an internal background class.
    """

    size: int
    stride: int
    scale: float = 1.0
    min_foreground: float = 0.0
    max_per_image: int | None = None
    aggregation: str = "mean"
    top_k: int = 3
    labels: str = "image"
    min_lesion: float = 0.1
    background_label: str | None = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"augmentation.tiles.size must be a positive int, got {self.size!r}")
        if self.stride < 1:
            raise ValueError(
                f"augmentation.tiles.stride must be a positive int, got {self.stride!r}; "
                f"use stride = size for tiles side by side"
            )
        if self.scale < 1.0:
            raise ValueError(
                f"augmentation.tiles.scale is a downscale factor >= 1 (1 = full resolution), "
                f"got {self.scale!r}"
            )
        if not 0.0 <= self.min_foreground <= 1.0:
            raise ValueError(
                f"augmentation.tiles.min_foreground must be within [0, 1], "
                f"got {self.min_foreground!r}"
            )
        if self.max_per_image is not None and self.max_per_image < 1:
            raise ValueError(
                f"augmentation.tiles.max_per_image must be a positive int or null, "
                f"got {self.max_per_image!r}"
            )
        if self.aggregation not in TILE_AGGREGATIONS:
            raise ValueError(
                f"augmentation.tiles.aggregation must be one of {TILE_AGGREGATIONS}, "
                f"got {self.aggregation!r}"
            )
        if self.labels not in TILE_LABELS:
            raise ValueError(
                f"augmentation.tiles.labels must be one of {TILE_LABELS}, got {self.labels!r}"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> TileSpec | None:
        """The spec of ``augmentation.tiles`` (None when tiling is off).

        Raises:
            ValueError: A value is invalid (the parameter schema refuses it before a run).
        """
        if params is None:
            return None
        known = {key: params[key] for key in cls.__dataclass_fields__ if key in params}
        return cls(**known)

    def config(self) -> dict[str, Any]:
        """The keys a model's metadata and serving configuration carry (``tiles``)."""
        return asdict(self)


@dataclass(frozen=True)
class Tiles:
    """An image's tiles.

    Attributes:
        pixels: ``uint8`` array ``(n, size, size, C)``.
        boxes: ``int64`` array ``(n, 4)``: each tile's ``(top, left, height, width)`` in the
            original image's pixels.
        foreground: ``float64`` array ``(n,)``: each tile's foreground share.
        padded: True when the image was smaller than one tile and padded with 0.
    """

    pixels: np.ndarray
    boxes: np.ndarray
    foreground: np.ndarray
    padded: bool

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


def grid_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of tiles of ``size`` every ``stride`` along ``length >= size`` pixels.

    The last tile ends at ``length``, so the whole side is covered.
    """
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def scaled_size(shape: tuple[int, ...], spec: TileSpec) -> tuple[int, int]:
    """``(height, width)`` of an image of ``shape`` after ``spec.scale``."""
    rows, cols = int(shape[0]), int(shape[1])
    if spec.scale == 1.0:
        return rows, cols
    return max(1, round(rows / spec.scale)), max(1, round(cols / spec.scale))


def tile_count(shape: tuple[int, ...], spec: TileSpec) -> int:
    """The most tiles an image of ``shape`` gives (before foreground and ``max_per_image``)."""
    rows, cols = scaled_size(shape, spec)
    count = len(grid_starts(rows, spec.size, spec.stride)) * len(
        grid_starts(cols, spec.size, spec.stride)
    )
    return count if spec.max_per_image is None else min(count, spec.max_per_image)


def tile_image(array: np.ndarray, spec: TileSpec) -> Tiles:
    """Cut a decoded image into tiles (the one function every caller uses).

    Args:
        array: ``uint8`` array ``(H, W, C)`` from
            :func:`~breast_cancer_pipeline.imaging.decode_image`.
        spec: How to cut.

    Returns:
        The kept tiles, in grid order (rows, then columns).
    """
    rows, cols = array.shape[:2]
    scaled = scaled_size(array.shape, spec)
    image = array if scaled == (rows, cols) else resize_image(array, scaled)
    padded = scaled[0] < spec.size or scaled[1] < spec.size
    if padded:
        image = _pad_to(image, spec.size)
    tops = grid_starts(image.shape[0], spec.size, spec.stride)
    lefts = grid_starts(image.shape[1], spec.size, spec.stride)
    starts = np.array([(top, left) for top in tops for left in lefts], dtype=np.int64)
    shares = _foreground_shares(image, starts, spec.size)
    keep = select_tiles(shares, spec)
    starts, shares = starts[keep], shares[keep]
    pixels = np.stack([image[t : t + spec.size, s : s + spec.size] for t, s in starts])
    factors = (rows / scaled[0], cols / scaled[1])
    return Tiles(pixels, _original_boxes(starts, spec.size, factors, (rows, cols)), shares, padded)


def select_tiles(shares: np.ndarray, spec: TileSpec) -> np.ndarray:
    """Indices (grid order) of the tiles kept from their foreground ``shares``."""
    keep = np.flatnonzero(shares >= spec.min_foreground)
    if keep.size == 0:
        keep = np.array([int(np.argmax(shares))])
    if spec.max_per_image is not None and keep.size > spec.max_per_image:
        order = np.argsort(-shares[keep], kind="stable")[: spec.max_per_image]
        keep = np.sort(keep[order])
    return keep


def _pad_to(image: np.ndarray, size: int) -> np.ndarray:
    rows, cols = image.shape[:2]
    out = np.zeros((max(rows, size), max(cols, size), image.shape[2]), dtype=image.dtype)
    out[:rows, :cols] = image
    return out


def _foreground_shares(image: np.ndarray, starts: np.ndarray, size: int) -> np.ndarray:
    """Each tile's share of foreground pixels, read on the image's small foreground mask."""
    mask = foreground_mask(image)
    if mask is None:
        return np.ones(len(starts), dtype=np.float64)
    dy, dx = mask.shape[0] / image.shape[0], mask.shape[1] / image.shape[1]
    shares = np.empty(len(starts), dtype=np.float64)
    for i, (top, left) in enumerate(starts):
        y0, x0 = int(top * dy), int(left * dx)
        y1 = max(y0 + 1, int(np.ceil((top + size) * dy)))
        x1 = max(x0 + 1, int(np.ceil((left + size) * dx)))
        shares[i] = float(mask[y0:y1, x0:x1].mean())
    return shares


def _original_boxes(
    starts: np.ndarray, size: int, factors: tuple[float, float], original: tuple[int, int]
) -> np.ndarray:
    """Tile boxes ``(top, left, height, width)`` in the original image's pixels, clipped."""
    boxes = np.empty((len(starts), 4), dtype=np.int64)
    fy, fx = factors
    for i, (top, left) in enumerate(starts):
        y0, x0 = round(top * fy), round(left * fx)
        y1 = min(original[0], round((top + size) * fy))
        x1 = min(original[1], round((left + size) * fx))
        boxes[i] = (y0, x0, max(1, y1 - y0), max(1, x1 - x0))
    return boxes


def aggregate_tiles(
    tile_proba: np.ndarray,
    image_index: np.ndarray,
    n_images: int,
    spec: TileSpec,
    positive: int | None = None,
) -> np.ndarray:
    """Image-level probabilities from tile probabilities, by ``spec.aggregation``.

    ``attention`` needs the attention head and the tiles' features: its caller computes the
    image rows with the head; here it falls back to ``mean`` (the rule the head starts from).

    Args:
        tile_proba: ``(n_tiles, k)`` tile probabilities.
        image_index: ``(n_tiles,)`` the row (``0 .. n_images - 1``) of each tile's image.
        n_images: Images in the split; each must have at least one tile.
        spec: The tiling, whose ``aggregation`` and ``top_k`` apply.
        positive: Index of the positive class (see
            :func:`~breast_cancer_pipeline.evaluation.aggregation.aggregate`).

    Returns:
        ``(n_images, k)`` probabilities, rows summing to 1.

    Raises:
        ValueError: An image has no tile.
    """
    from breast_cancer_pipeline.evaluation.aggregation import aggregate  # noqa: PLC0415

    method = "mean" if spec.aggregation == "attention" else spec.aggregation
    tile_proba = np.asarray(tile_proba, dtype=np.float64)
    image_index = np.asarray(image_index, dtype=np.int64)
    order = np.argsort(image_index, kind="stable")
    bounds = np.searchsorted(image_index[order], np.arange(n_images + 1))
    empty = np.flatnonzero(np.diff(bounds) == 0)
    if empty.size:
        raise ValueError(f"images {empty[:5].tolist()} have no tile; every image needs one")
    out = np.empty((n_images, tile_proba.shape[1]), dtype=np.float64)
    for i in range(n_images):
        rows = tile_proba[order[bounds[i] : bounds[i + 1]]]
        out[i] = aggregate(rows, method, positive, top_k=spec.top_k)
    return out


#: The class of tiles outside every lesion when ``labels: mask`` and ``background_label`` is
#: null: the tile network's last output, left out of the image-level answer.
BACKGROUND_CLASS = "background"


def internal_background(spec: TileSpec | None) -> bool:
    """Whether the tile network has the internal :data:`BACKGROUND_CLASS` as its last output."""
    return spec is not None and spec.labels == "mask" and spec.background_label is None


def tile_classes(class_names: list[str], spec: TileSpec | None) -> list[str]:
    """The tile network's classes: the image classes, then the internal background if any.

    Raises:
        ValueError: A class is already named :data:`BACKGROUND_CLASS` while the internal one
            is needed, or ``background_label`` is not one of ``class_names``.
    """
    names = [str(c) for c in class_names]
    if spec is None or spec.labels != "mask":
        return names
    if spec.background_label is not None:
        if spec.background_label not in names:
            raise ValueError(
                f"augmentation.tiles.background_label = {spec.background_label!r} is not one "
                f"of the classes {names}; name one of them, or null for an internal "
                f"{BACKGROUND_CLASS!r} class"
            )
        return names
    if BACKGROUND_CLASS in names:
        raise ValueError(
            f"a class is already named {BACKGROUND_CLASS!r}: set "
            f"augmentation.tiles.background_label to it (or to another class)"
        )
    return [*names, BACKGROUND_CLASS]


def image_classes(tile_class_names: list[str], spec: TileSpec | None) -> list[str]:
    """The image-level classes of a tile network's classes (the internal background left out)."""
    names = [str(c) for c in tile_class_names]
    return names[:-1] if internal_background(spec) else names


def image_probabilities(
    tile_proba: np.ndarray,
    image_index: np.ndarray,
    n_images: int,
    spec: TileSpec,
    tile_class_names: list[str],
    positive_class: str | None = None,
) -> np.ndarray:
    """Image-level probabilities over the image classes, from a split's tile probabilities.

    The tiles of each image are combined by :func:`aggregate_tiles`; the internal background
    column, if any, is then dropped and each row renormalised.

    Args:
        tile_proba: ``(n_tiles, k)`` probabilities over ``tile_class_names``.
        image_index: ``(n_tiles,)`` the row of each tile's image.
        n_images: Images in the split.
        spec: The tiling.
        tile_class_names: The tile network's classes (:func:`tile_classes`).
        positive_class: The class that ``max``, ``noisy_or`` and ``top_k_mean`` score, or
            None to score every class.

    Returns:
        ``(n_images, k')`` rows summing to 1, over :func:`image_classes`.
    """
    names = [str(c) for c in tile_class_names]
    positive = names.index(positive_class) if positive_class in names else None
    proba = aggregate_tiles(tile_proba, image_index, n_images, spec, positive)
    if not internal_background(spec):
        return proba
    kept = proba[:, :-1]
    total = kept.sum(axis=1, keepdims=True)
    uniform = np.full_like(kept, 1.0 / max(kept.shape[1], 1))
    return np.where(total > 0, kept / np.where(total > 0, total, 1.0), uniform)


#: Per-split model-input arrays that exist only with tiles (``<key>_<split>``): each tile's
#: image row, each tile's box, and the image labels (``y_<split>`` holds the tile labels).
TILE_SPLIT_KEYS: tuple[str, ...] = ("tile_image", "tile_boxes", "image_y")


def spec_arrays(spec: TileSpec) -> dict[str, np.ndarray]:
    """The ``tiles`` entry of model-input arrays made with ``spec`` (its config as JSON)."""
    return {"tiles": np.array(json.dumps(spec.config()), dtype=np.str_)}


def spec_of_arrays(arrays: Mapping[str, Any]) -> TileSpec | None:
    """The tiling model-input arrays were made with (None: whole images, no ``tiles`` key)."""
    if "tiles" not in arrays:
        return None
    return TileSpec.from_params(json.loads(str(np.asarray(arrays["tiles"]).item())))
