"""Augmentation: the model's input arrays, the augmentation spec and a preview of it.

The model input is decoded once from the validated PNGs into ``uint8`` arrays at the
configured geometry (``augmentation.image_size`` and ``resize``, applied by
:func:`breast_cancer_pipeline.geometry.fit_image`, as serving does). The image arrays are
returned as :class:`~breast_cancer_pipeline.file_records.ArrayRows`: the dataset writes them
an image at a time to ``data/05_model_input/arrays``, which the later stages memory-map.
Augmentation itself runs inside the model as Keras layers (see
:func:`breast_cancer_pipeline.modeling.build_augmenter`), active only in training, so
serving never re-implements it.
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
from breast_cancer_pipeline.geometry import Geometry, fit_image, geometry_arrays
from breast_cancer_pipeline.imaging import decode_image
from breast_cancer_pipeline.manifest import EXTERNAL_SPLIT, SPLITS
from breast_cancer_pipeline.plotting import figure_png, pyplot
from breast_cancer_pipeline.tiles import TileSpec, spec_arrays, tile_classes

from .tiling import empty_layout, tile_split_arrays

logger = logging.getLogger(__name__)

#: The transforms with a strength (a fraction; 0 leaves the transform out).
_STRENGTHS = ("rotation", "zoom", "translation", "contrast")


def _check_pngs(images: Mapping[str, Callable[[], bytes]], manifest: pd.DataFrame) -> None:
    missing = sorted(set(manifest["path"]) - set(images))
    if missing:
        raise ValueError(
            f"{len(missing)} manifest paths have no converted PNG (first: {missing[0]!r}); "
            "rerun the ingestion pipeline"
        )


def model_image(
    load: Callable[[], bytes], path: str, geometry: Geometry, color_mode: str
) -> np.ndarray:
    """One image of the model input: its PNG decoded and brought to the model's geometry.

    A module-level function: a per-image task on a Dask cluster too.

    Args:
        load: Returns the PNG's bytes.
        path: The manifest path (for messages).
        geometry: The model's input size and resize mode.
        color_mode: ``grayscale`` or ``rgb``.

    Returns:
        ``uint8`` array ``(height, width, channels)``.
    """
    return fit_image(decode_image(load(), path, color_mode=color_mode), geometry)


def _model_images(
    images: Mapping[str, Callable[[], bytes]],
    paths: list[str],
    geometry: Geometry,
    color_mode: str,
    cluster: Mapping[str, Any] | None,
) -> Iterator[np.ndarray]:
    calls = [(images[path], path, geometry, color_mode) for path in paths]
    yield from map_in_order(model_image, calls, cluster, available_cores(len(calls)))


def _split_arrays(
    images: Mapping[str, Callable[[], bytes]],
    rows: pd.DataFrame,
    split: str,
    index: Mapping[str, int],
    geometry: Geometry,
    color_mode: str,
    cluster: Mapping[str, Any] | None,
) -> dict[str, np.ndarray | ArrayRows]:
    """``x_<split>`` (made as it is written), ``y_<split>`` and ``paths_<split>``."""
    paths = [str(p) for p in rows["path"]]
    shape = (len(paths), *geometry.size, 3 if color_mode == "rgb" else 1)
    return {
        f"x_{split}": ArrayRows(
            shape, np.uint8, partial(_model_images, images, paths, geometry, color_mode, cluster)
        ),
        f"y_{split}": rows["label"].map(index).to_numpy(dtype=np.int32),
        f"paths_{split}": rows["path"].to_numpy(dtype=np.str_),
    }


@dataclass(frozen=True)
class _Arrays:
    """How a stage's arrays are made: whole images at ``geometry``, or the tiles of ``layout``."""

    images: Mapping[str, Callable[[], bytes]]
    class_names: list[str]
    geometry: Geometry
    spec: TileSpec | None
    color_mode: str
    cluster: Mapping[str, Any] | None
    layout: pd.DataFrame | None

    def shared(self) -> dict[str, np.ndarray]:
        """``class_names`` (the network's), the geometry keys and, with tiles, ``tiles``."""
        return {
            "class_names": np.array(self.network_classes(), dtype=np.str_),
            **geometry_arrays(self.geometry),
            **({} if self.spec is None else spec_arrays(self.spec)),
        }

    def network_classes(self) -> list[str]:
        """The classes the network outputs (with tiles, maybe the internal background)."""
        return tile_classes(self.class_names, self.spec)

    def of_split(self, rows: pd.DataFrame, split: str) -> dict[str, np.ndarray | ArrayRows]:
        """One split's arrays."""
        names = self.network_classes()
        if self.spec is None:
            index = {name: i for i, name in enumerate(names)}
            return _split_arrays(
                self.images, rows, split, index, self.geometry, self.color_mode, self.cluster
            )
        layout = empty_layout() if self.layout is None else self.layout
        return tile_split_arrays(
            self.images, rows, split, layout, names, self.spec, self.color_mode, self.cluster
        )


def _internal(manifest: pd.DataFrame) -> pd.DataFrame:
    """The rows of train, val and test: the external site never decides what the model is."""
    return manifest[manifest["split"] != EXTERNAL_SPLIT]


def _classes_and_mode(manifest: pd.DataFrame) -> tuple[list[str], str]:
    internal = _internal(manifest)
    color_mode = "rgb" if int(internal["channels"].max()) == 3 else "grayscale"
    return sorted(internal["label"].unique()), color_mode


def prepare_model_input(
    images: Mapping[str, Callable[[], bytes]],
    manifest: pd.DataFrame,
    params: dict,
    cluster: dict | None = None,
    tile_layout: pd.DataFrame | None = None,
) -> dict[str, np.ndarray | ArrayRows]:
    """Decode every image of train, val and test into per-split arrays at the model's geometry.

    The external site's images (split ``external``) are not among them: they go to
    :func:`prepare_external_input`, which no training node reads. With ``tiles``, the arrays
    hold the tiles of :func:`~.tiling.tile_images`'s layout instead of whole images.

    Args:
        images: ``{manifest path: load function}`` of the intermediate PNGs.
        manifest: The validated manifest.
        params: The ``augmentation`` parameters (``image_size``, ``resize``,
            ``crop_margin``, ``tiles``).
        cluster: The ``cluster`` parameters: with an ``address``, the images are decoded on
            that Dask cluster (the arrays are the same).
        tile_layout: The tiles of every image (:func:`~.tiling.tile_images`); read only with
            ``tiles`` set.

    Returns:
        ``x_<split>`` (``uint8``, N×H×W×C, made image by image as the dataset writes it),
        ``y_<split>`` (class index), ``paths_<split>`` for train, val and test,
        ``class_names`` (sorted labels; the index order), and ``resize`` and ``crop_margin``
        (what the finetune stage records for serving). With ``tiles``: ``x_<split>`` and
        ``y_<split>`` are the tiles and their labels, ``paths_<split>`` stays one row per
        image, with ``tile_image_<split>``, ``tile_boxes_<split>``, ``image_y_<split>``,
        ``tiles`` (the spec as JSON) and, with an internal background class, that class
        last in ``class_names``.

    Raises:
        ValueError: A manifest path has no PNG, or the tile layout misses an image.
    """
    geometry = Geometry.from_params(params)
    spec = TileSpec.from_params(params.get("tiles"))
    internal = _internal(manifest)
    class_names, color_mode = _classes_and_mode(manifest)
    _check_pngs(images, internal)
    making = _Arrays(images, class_names, geometry, spec, color_mode, cluster, tile_layout)
    arrays: dict[str, np.ndarray | ArrayRows] = making.shared()
    for split in SPLITS:
        arrays |= making.of_split(internal[internal["split"] == split], split)
    counts = "/".join(str(len(arrays[f"paths_{s}"])) for s in SPLITS)
    if spec is not None:
        tiles = "/".join(str(len(arrays[f"y_{s}"])) for s in SPLITS)
        logger.info("Model input: %s tiles of %d px from %s images", tiles, spec.size, counts)
        return arrays
    logger.info(
        "Model input: %s images of %dx%d px (%s), %s",
        counts,
        geometry.height,
        geometry.width,
        geometry.resize,
        color_mode,
    )
    return arrays


def prepare_external_input(
    images: Mapping[str, Callable[[], bytes]],
    manifest: pd.DataFrame,
    params: dict,
    cluster: dict | None = None,
    tile_layout: pd.DataFrame | None = None,
) -> dict[str, np.ndarray | ArrayRows]:
    """The external test site's arrays, decoded like the model input (same geometry, classes).

    Args:
        images: ``{manifest path: load function}`` of the intermediate PNGs.
        manifest: The validated manifest.
        params: The ``augmentation`` parameters (``image_size``, ``resize``,
            ``crop_margin``).
        cluster: The ``cluster`` parameters: with an ``address``, the images are decoded on
            that Dask cluster (the arrays are the same).
        tile_layout: The tiles of every image (with ``tiles``, as for the model input).

    Returns:
        ``x_external``, ``y_external`` (class index in the model's order), ``paths_external``
        (empty, with 0 rows, when there is no external site: ``ingestion.external_dir`` null)
        and ``class_names``; with ``tiles``, the tile arrays of :func:`prepare_model_input`.

    Raises:
        ValueError: An external image has a class the training data lacks (the model cannot
            score it), or a manifest path has no PNG.
    """
    class_names, color_mode = _classes_and_mode(manifest)
    rows = manifest[manifest["split"] == EXTERNAL_SPLIT]
    unknown = sorted(set(rows["label"]) - set(class_names))
    if unknown:
        raise ValueError(
            f"the external site (ingestion.external_dir) has classes the training data lacks: "
            f"{', '.join(unknown)} (training classes: {', '.join(class_names)}); rename or "
            "merge them with ingestion.label_map, or leave them out with ingestion.exclude"
        )
    _check_pngs(images, rows)
    geometry = Geometry.from_params(params)
    spec = TileSpec.from_params(params.get("tiles"))
    making = _Arrays(images, class_names, geometry, spec, color_mode, cluster, tile_layout)
    arrays = making.of_split(rows, EXTERNAL_SPLIT)
    if len(rows):
        logger.info("External test site: %d images", len(rows))
    shared = making.shared()
    tiles = {} if spec is None else {"tiles": shared["tiles"]}
    return {"class_names": shared["class_names"], **tiles, **arrays}


def build_augmentation_spec(
    params: dict, stain_reference: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The augmentation spec the model factory reads (checked before the run by the schema).

    Args:
        params: The ``augmentation`` parameters.
        stain_reference: The fitted stain reference (``fit_stain_reference``), or ``None``.

    Returns:
        ``flip``, the strengths of ``rotation``, ``zoom``, ``translation``, ``contrast`` and
        ``hed_jitter`` (``augmentation.stain.jitter``), and ``stain_reference``.
    """
    return {
        "flip": params["flip"],
        **{key: float(params[key]) for key in _STRENGTHS},
        "hed_jitter": float(params["stain"]["jitter"] or 0.0),
        "stain_reference": stain_reference or {"normalize": None},
    }


def preview_augmentation(
    model_input: dict[str, np.ndarray], spec: dict[str, Any], params: dict
) -> bytes:
    """A grid of training images (left column) and augmented versions of each.

    The augmented versions are of the stain-normalised image when the spec has a stain
    reference, as the model sees them.

    Args:
        model_input: The model-input arrays (``x_train``, ``y_train``, ``class_names``).
        spec: The augmentation spec.
        params: The ``augmentation`` parameters (``preview``: rows, augmented versions per
            image, seed, resolution).

    Returns:
        The grid as PNG bytes.
    """
    from breast_cancer_pipeline.modeling import (  # noqa: PLC0415
        build_augmenter,
        stain_preprocessing,
    )

    preview = params["preview"]
    rng = np.random.default_rng(preview["seed"])
    x, y = model_input["x_train"], model_input["y_train"]
    rows = min(preview["rows"], len(x))
    picks = np.sort(rng.choice(len(x), size=rows, replace=False))
    augmenter = build_augmenter(spec, seed=preview["seed"])
    cols = preview["augmented_per_image"] + 1
    fig, axes = pyplot().subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    for r, i in enumerate(picks):
        image = np.asarray(x[i], dtype=np.float32)[None]
        seen = stain_preprocessing(image, spec, image.shape[-1])  # stain-normalised, if on
        for c in range(cols):
            shown = image[0] if c == 0 else np.asarray(augmenter(seen, training=True))[0]
            ax = axes[r][c]
            pixels = np.clip(shown, 0, 255).astype(np.uint8).squeeze()
            ax.imshow(pixels, cmap="gray", vmin=0, vmax=255)  # brightness as the model sees it
            ax.set_axis_off()
            if c == 0:
                ax.set_title(str(model_input["class_names"][y[i]]), fontsize=8)
    fig.suptitle("Training images (left) and augmented versions", fontsize=9)
    fig.tight_layout()
    return figure_png(fig, preview["figure_dpi"])
