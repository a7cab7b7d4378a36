"""The tile stage: which tiles each image gives, and the tile arrays the network trains on.

With ``augmentation.tiles`` set, the model input is made in two passes over the images:

1. :func:`tile_images` (the node ``tile_images``) cuts every image with
   :func:`breast_cancer_pipeline.tiles.tile_image` and keeps only the layout: one row per kept
   tile with its box, foreground share and label (``tile_layout``). The number of tiles of an
   image is only known once its foreground is read, so this pass is what sizes the arrays.
2. :func:`tile_split_arrays` writes each split's tiles row by row into the memory-mapped
   ``x_<split>`` (an :class:`~breast_cancer_pipeline.file_records.ArrayRows` of that size),
   cutting each image again with the same function; memory holds one image's tiles.

A tile's label is its image's, except with ``labels: mask`` in an image whose lesion mask is
not empty: a tile covered by the lesion for less than ``min_lesion`` of its area takes
``background_label`` (or the internal background class,
:data:`~breast_cancer_pipeline.tiles.BACKGROUND_CLASS`). An image without a lesion (no mask, or
an empty one) gives every tile its own label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.cluster import available_cores, map_in_order
from breast_cancer_pipeline.file_records import ArrayRows
from breast_cancer_pipeline.imaging import decode_image
from breast_cancer_pipeline.manifest import EXTERNAL_SPLIT
from breast_cancer_pipeline.tiles import BACKGROUND_CLASS, TileSpec, tile_image

logger = logging.getLogger(__name__)

#: The columns of ``tile_layout``: one row per kept tile, in image then grid order.
LAYOUT_COLUMNS = (
    "path",
    "split",
    "top",
    "left",
    "height",
    "width",
    "foreground",
    "lesion",
    "label",
    "padded",
)

#: The manifest column of an image's lesion mask (empty: none).
MASK_COLUMN = "mask_path"


@dataclass(frozen=True)
class ImageTiles:
    """What the layout keeps of one image's tiles (no pixels).

    Attributes:
        boxes: ``(n, 4)`` ``(top, left, height, width)`` in the image's pixels.
        foreground: ``(n,)`` foreground shares.
        lesion: ``(n,)`` lesion shares, or None when the image has no lesion mask.
        padded: The image was smaller than one tile.
    """

    boxes: np.ndarray
    foreground: np.ndarray
    lesion: np.ndarray | None
    padded: bool


def image_tile_layout(
    load: Callable[[], bytes],
    path: str,
    spec: TileSpec,
    color_mode: str,
    load_mask: Callable[[], bytes] | None = None,
    mask_path: str = "",
) -> ImageTiles:
    """One image's tile layout (a module-level function: a per-image task on a cluster too).

    Args:
        load: Returns the image's PNG bytes.
        path: The manifest path (for messages).
        spec: The tiling.
        color_mode: ``grayscale`` or ``rgb``.
        load_mask: Returns the converted lesion mask's bytes, or None without a mask.
        mask_path: The mask's manifest path (for messages).
    """
    tiles = tile_image(decode_image(load(), path, color_mode=color_mode), spec)
    lesion = None
    if load_mask is not None:
        from breast_cancer_pipeline.masks import read_mask, tile_lesion_share  # noqa: PLC0415

        mask = read_mask(load_mask(), mask_path)
        if mask.any():
            lesion = np.asarray(tile_lesion_share(mask, tiles.boxes), dtype=np.float64)
    return ImageTiles(tiles.boxes, tiles.foreground, lesion, tiles.padded)


def image_tile_pixels(
    load: Callable[[], bytes], path: str, spec: TileSpec, color_mode: str
) -> np.ndarray:
    """One image's tiles, ``uint8`` ``(n, size, size, C)`` (a per-image task on a cluster too)."""
    return tile_image(decode_image(load(), path, color_mode=color_mode), spec).pixels


def _mask_loaders(
    images: Mapping[str, Callable[[], bytes]], rows: pd.DataFrame, spec: TileSpec
) -> list[tuple[Callable[[], bytes] | None, str]]:
    """Each row's mask loader and mask path (None and "" when labels come from the image)."""
    if spec.labels != "mask":
        return [(None, "")] * len(rows)
    if MASK_COLUMN not in rows:
        raise ValueError(
            "augmentation.tiles.labels is 'mask' but the manifest has no mask_path column; "
            "set ingestion.mask_pattern or ingestion.csv.mask_column and rerun ingestion"
        )
    out = []
    for mask_path in rows[MASK_COLUMN].fillna("").astype(str):
        if mask_path and mask_path not in images:
            raise ValueError(
                f"the mask {mask_path!r} has no converted file; rerun the ingestion pipeline"
            )
        out.append((images[mask_path], mask_path) if mask_path else (None, ""))
    return out


def _tile_labels(label: str, layout: ImageTiles, spec: TileSpec) -> list[str]:
    """Each tile's class: its image's, or the background outside a lesion (``labels: mask``)."""
    if layout.lesion is None:
        return [label] * len(layout.boxes)
    background = spec.background_label or BACKGROUND_CLASS
    return [label if share >= spec.min_lesion else background for share in layout.lesion]


def _layout_frame(path: str, split: str, label: str, layout: ImageTiles, spec: TileSpec):
    boxes = np.asarray(layout.boxes, dtype=np.int64).reshape(-1, 4)
    lesion = np.full(len(boxes), np.nan) if layout.lesion is None else layout.lesion
    return pd.DataFrame(
        {
            "path": path,
            "split": split,
            **{name: boxes[:, i] for i, name in enumerate(("top", "left", "height", "width"))},
            "foreground": np.asarray(layout.foreground, dtype=np.float64),
            "lesion": np.asarray(lesion, dtype=np.float64),
            "label": _tile_labels(label, layout, spec),
            "padded": layout.padded,
        }
    )


def empty_layout() -> pd.DataFrame:
    """The layout without tiles (``augmentation.tiles`` null)."""
    return pd.DataFrame({name: pd.Series(dtype=_DTYPES[name]) for name in LAYOUT_COLUMNS})


_DTYPES = {
    **dict.fromkeys(("path", "split", "label"), "str"),
    **dict.fromkeys(("top", "left", "height", "width"), "int64"),
    **dict.fromkeys(("foreground", "lesion"), "float64"),
    "padded": "bool",
}


def tile_images(
    images: Mapping[str, Callable[[], bytes]],
    manifest: pd.DataFrame,
    params: dict,
    cluster: dict | None = None,
) -> pd.DataFrame:
    """The tiles every image gives: their boxes, foreground and labels (no pixels).

    Every split is laid out, the external site's too. An image smaller than one tile is
    padded; the warning names it.

    Args:
        images: ``{manifest path: load function}`` of the intermediate PNGs (and masks).
        manifest: The validated manifest.
        params: The ``augmentation`` parameters (``tiles``; null: no tile).
        cluster: The ``cluster`` parameters: with an ``address``, the images are read on that
            Dask cluster.

    Returns:
        One row per kept tile (:data:`LAYOUT_COLUMNS`), images in manifest order and each
        image's tiles in grid order; no row with ``tiles`` null.

    Raises:
        ValueError: ``labels: mask`` without a mask column or a mask's file.
    """
    spec = TileSpec.from_params(params.get("tiles"))
    if spec is None:
        return empty_layout()
    internal = manifest[manifest["split"] != EXTERNAL_SPLIT]
    color_mode = "rgb" if int(internal["channels"].max()) == 3 else "grayscale"
    paths = [str(p) for p in manifest["path"]]
    missing = sorted(set(paths) - set(images))
    if missing:
        raise ValueError(
            f"{len(missing)} manifest paths have no converted PNG (first: {missing[0]!r}); "
            "rerun the ingestion pipeline"
        )
    masks = _mask_loaders(images, manifest, spec)
    calls = [
        (images[path], path, spec, color_mode, load_mask, mask_path)
        for path, (load_mask, mask_path) in zip(paths, masks, strict=True)
    ]
    layouts = map_in_order(image_tile_layout, calls, cluster, available_cores(len(calls)))
    rows = zip(paths, manifest["split"], manifest["label"], layouts, strict=True)
    frames = [_layout_frame(p, str(s), str(c), layout, spec) for p, s, c, layout in rows]
    layout = pd.concat(frames, ignore_index=True) if frames else empty_layout()
    _warn_padded(layout, spec)
    logger.info(
        "Tiles: %d from %d images (%.1f per image), %d px every %d px at 1/%g",
        len(layout),
        len(paths),
        len(layout) / max(1, len(paths)),
        spec.size,
        spec.stride,
        spec.scale,
    )
    return layout


def _warn_padded(layout: pd.DataFrame, spec: TileSpec) -> None:
    padded = layout.loc[layout["padded"], "path"].unique().tolist()
    if padded:
        logger.warning(
            "%d image(s) smaller than one tile (%d px after 1/%g) were padded with black: %s",
            len(padded),
            spec.size,
            spec.scale,
            ", ".join(padded[:10]) + (" ..." if len(padded) > 10 else ""),
        )


def _tile_rows(
    images: Mapping[str, Callable[[], bytes]],
    paths: list[str],
    counts: list[int],
    spec: TileSpec,
    color_mode: str,
    cluster: Mapping[str, Any] | None,
) -> Iterator[np.ndarray]:
    """Every tile of ``paths`` in order, checked against the layout's count per image."""
    calls = [(images[path], path, spec, color_mode) for path in paths]
    pixels = map_in_order(image_tile_pixels, calls, cluster, available_cores(len(calls)))
    for path, expected, tiles in zip(paths, counts, pixels, strict=True):
        if len(tiles) != expected:
            raise ValueError(
                f"{path!r} gives {len(tiles)} tiles, the tile layout says {expected}: the "
                "layout is stale; rerun the augmentation pipeline"
            )
        yield from tiles


def tile_split_arrays(
    images: Mapping[str, Callable[[], bytes]],
    rows: pd.DataFrame,
    split: str,
    layout: pd.DataFrame,
    tile_class_names: list[str],
    spec: TileSpec,
    color_mode: str,
    cluster: Mapping[str, Any] | None,
) -> dict[str, np.ndarray | ArrayRows]:
    """A split's tile arrays: ``x`` (tiles, made as written), ``y`` (tile labels) and the rest.

    Returns:
        ``x_<split>`` ``(n_tiles, size, size, C)``, ``y_<split>`` (tile class index),
        ``tile_image_<split>`` (the row of each tile's image in ``paths_<split>``),
        ``tile_boxes_<split>``, ``paths_<split>`` and ``image_y_<split>`` (one per image).

    Raises:
        ValueError: An image of ``rows`` is missing from the layout (a stale layout).
    """
    paths = [str(p) for p in rows["path"]]
    by_path = layout[layout["path"].isin(paths)]
    position = {path: i for i, path in enumerate(paths)}
    image_row = by_path["path"].map(position).to_numpy(dtype=np.int64)
    order = np.argsort(image_row, kind="stable")
    tiles, image_row = by_path.iloc[order], image_row[order]
    counts = np.bincount(image_row, minlength=len(paths)).tolist()
    if 0 in counts:
        raise ValueError(
            f"{paths[counts.index(0)]!r} has no tile in the tile layout; rerun the "
            "augmentation pipeline"
        )
    index = {name: i for i, name in enumerate(tile_class_names)}
    channels = 3 if color_mode == "rgb" else 1
    return {
        f"x_{split}": ArrayRows(
            (len(tiles), spec.size, spec.size, channels),
            np.uint8,
            partial(_tile_rows, images, paths, counts, spec, color_mode, cluster),
        ),
        f"y_{split}": tiles["label"].map(index).to_numpy(dtype=np.int32),
        f"tile_image_{split}": image_row,
        f"tile_boxes_{split}": tiles[["top", "left", "height", "width"]].to_numpy(np.int64),
        f"paths_{split}": np.asarray(paths, dtype=np.str_),
        f"image_y_{split}": rows["label"].map(index).to_numpy(dtype=np.int32),
    }
