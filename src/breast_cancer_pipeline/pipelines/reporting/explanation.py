"""The ``explanation`` block of ``metrics.json``: Grad-CAM checked against the experts' masks.

For every test image whose manifest row has a lesion mask (``mask_path``), the mask is read
from the converted images (catalog ``intermediate_images``) and the Grad-CAM of the image's
true class (:func:`breast_cancer_pipeline.explain.grad_cam`, at ``reporting.gradcam.layer``)
is scored against it (:mod:`breast_cancer_pipeline.evaluation.explanation`). Images whose
mask is empty (a normal breast, a lesion that does not show in this view) are left out.

* A whole-image network: the mask is brought to the model input exactly as its image was
  (:func:`breast_cancer_pipeline.masks.fit_mask`) and compared with the map of the input.
* A network trained on tiles (``augmentation.tiles``): the map is stitched from the image's
  tiles at the image's own resolution (:func:`tiled_map`) and compared with the mask as it
  was drawn. Each tile of the image (``tile_image_test``, ``tile_boxes_test``) is weighted
  by what the image's answer takes from it: its probability of the class explained or, for
  a model combined by its attention head, its attention weight (divided by the image's
  largest). The ``reporting.explanation.max_tiles`` tiles of highest weight are explained;
  each one's map, times its weight, is placed at its box, the maximum where tiles overlap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation.explanation import (
    FIGURES,
    explanation_summary,
    image_figures,
)
from breast_cancer_pipeline.evaluation.levels import image_groups
from breast_cancer_pipeline.geometry import Geometry, geometry_of_arrays
from breast_cancer_pipeline.imaging import decode_image
from breast_cancer_pipeline.manifest import MASK_PATH
from breast_cancer_pipeline.masks import fit_mask, read_mask
from breast_cancer_pipeline.serving.model import penultimate_features
from breast_cancer_pipeline.tiles import spec_of_arrays

logger = logging.getLogger(__name__)

#: Why there is no figure, by case (the block's ``note``).
_NO_MASKS = "no test image has a non-empty lesion mask (ingestion.mask_pattern)"
#: What the map is (the block's ``map``), with tiles and without.
_STITCHED = "stitched from tiles at the image's resolution"
_MODEL_INPUT = "model input"


def fitted_masks(
    images: Mapping[str, Callable[[], bytes]],
    paths: list[str],
    mask_paths: list[str],
    geometry: Geometry,
    color_mode: str,
) -> np.ndarray:
    """Each image's mask at the model input, ``(n, height, width)`` bool.

    Args:
        images: ``{path: loader}`` of the converted images and masks.
        paths: The images' paths (the crop box of ``crop_foreground`` is found on them).
        mask_paths: Their masks' paths.
        geometry: The model input's geometry (the model-input arrays').
        color_mode: ``grayscale`` or ``rgb``, as the model input's images were decoded.
    """
    out = np.zeros((len(paths), *geometry.size), dtype=bool)
    for i, (path, mask_path) in enumerate(zip(paths, mask_paths, strict=True)):
        image = decode_image(images[path](), path, color_mode=color_mode)
        out[i] = fit_mask(read_mask(images[mask_path](), mask_path), image, geometry)
    return out


def explanation_metrics(
    classifier: Any,
    model_input: Mapping[str, Any],
    images: Mapping[str, Callable[[], bytes]],
    manifest: pd.DataFrame,
    keys: pd.DataFrame,
    metadata: dict[str, Any],
    params: dict,
    serving_model: Any = None,
) -> dict[str, Any]:
    """Energy inside the mask and pointing game of the test images' Grad-CAM.

    Args:
        classifier: The trained classifier (the network Grad-CAM explains).
        model_input: The model-input arrays (``x_test``, ``y_test``, ``paths_test``; with
            tiles ``tile_image_test``, ``tile_boxes_test``, ``image_y_test``).
        images: ``intermediate_images``: ``{path: loader}`` of converted images and masks.
        manifest: The validated manifest (``mask_path``).
        keys: ``evaluation_keys``: the patients, for the cluster bootstrap.
        metadata: The classifier's metadata (``class_names``).
        params: The ``reporting`` parameters (``gradcam.layer``, ``batch_size``,
            ``bootstrap``, ``explanation.max_tiles``).
        serving_model: The packaged model: with tiles, it scores each tile (test-time views
            averaged, and its attention head if it has one) to weight the tiles' maps.

    Returns:
        The ``explanation`` block
        (:func:`~breast_cancer_pipeline.evaluation.explanation.explanation_summary`) with
        ``class_explained`` and ``map`` (what was compared with the masks; with tiles also
        ``tile_weights`` and ``max_tiles``), or ``n`` 0 and a ``note`` when nothing can be
        scored.
    """
    paths = [str(p) for p in np.asarray(model_input["paths_test"])]
    lookup = manifest.set_index("path")[MASK_PATH] if MASK_PATH in manifest else pd.Series()
    mask_paths = {i: str(lookup.get(p, "") or "") for i, p in enumerate(paths)}
    mask_paths = {i: mask for i, mask in mask_paths.items() if mask}
    if spec_of_arrays(model_input) is None:
        rows, figures, y = _input_figures(classifier, model_input, images, mask_paths, params)
        how = {"map": _MODEL_INPUT}
    else:
        rows, figures, y = _tiled_figures(
            classifier, serving_model, model_input, images, mask_paths, params
        )
        how = {"map": _STITCHED, **_tiling_keys(serving_model, model_input, params)}
    if not rows:
        return {"n": 0, "note": _NO_MASKS}
    groups = image_groups(pd.DataFrame({"path": [paths[i] for i in rows]}), keys)
    summary = explanation_summary(figures, y, metadata["class_names"], params["bootstrap"], groups)
    logger.info(
        "Explanations against %d expert masks (test; map: %s): %.1f%% of the Grad-CAM "
        "inside the mask (an even map: %.1f%%), pointing game %.1f%%",
        summary["n"],
        how["map"],
        100 * summary["energy_inside"],
        100 * summary["mask_area"],
        100 * summary["pointing_game"],
    )
    return m.json_safe({**summary, "class_explained": "true label", **how})


def _input_figures(
    classifier: Any,
    model_input: Mapping[str, Any],
    images: Mapping[str, Callable[[], bytes]],
    mask_paths: dict[int, str],
    params: dict,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The test rows scored, their figures and labels: whole images, masks fitted to the input."""
    rows = sorted(mask_paths)
    if not rows:
        return [], np.empty((0, len(FIGURES))), np.empty(0, dtype=np.int64)
    paths = np.asarray(model_input["paths_test"])
    x = np.asarray(model_input["x_test"])
    color_mode = "rgb" if x.shape[-1] == 3 else "grayscale"
    masks = fitted_masks(
        images,
        [str(paths[i]) for i in rows],
        [mask_paths[i] for i in rows],
        geometry_of_arrays(model_input),
        color_mode,
    )
    lesion = masks.reshape(len(rows), -1).any(axis=1)
    rows, masks = [r for r, keep in zip(rows, lesion, strict=True) if keep], masks[lesion]
    y = np.asarray(model_input["y_test"])[rows]
    if not rows:
        return [], np.empty((0, len(FIGURES))), y
    return rows, image_figures(_cams(classifier, x[rows], y, params), masks), y


def _tiled_figures(
    classifier: Any,
    serving_model: Any,
    model_input: Mapping[str, Any],
    images: Mapping[str, Callable[[], bytes]],
    mask_paths: dict[int, str],
    params: dict,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The test rows scored, their figures and labels: maps stitched from tiles, masks as drawn."""
    tile_rows = np.asarray(model_input["tile_image_test"])
    boxes = np.asarray(model_input["tile_boxes_test"])
    labels = np.asarray(model_input["image_y_test"])
    x = model_input["x_test"]
    rows, figures = [], []
    for row in sorted(mask_paths):
        mask = read_mask(images[mask_paths[row]](), mask_paths[row])
        tiles = np.flatnonzero(tile_rows == row)
        if not mask.any() or tiles.size == 0:
            continue
        _check_fits(mask, boxes[tiles], mask_paths[row])
        pixels = np.asarray(x[tiles])
        weights = tile_weights(serving_model, pixels, int(labels[row]), int(params["batch_size"]))
        cam = tiled_map(
            classifier,
            pixels,
            boxes[tiles],
            mask.shape,
            int(labels[row]),
            weights,
            params,
        )
        rows.append(row)
        figures.append(image_figures(cam[None], mask[None])[0])
    figures = np.array(figures, dtype=np.float64).reshape(-1, len(FIGURES))
    return rows, figures, labels[rows]


def _check_fits(mask: np.ndarray, boxes: np.ndarray, name: str) -> None:
    """Refuse a mask smaller than the image its tiles were cut from.

    Raises:
        ValueError: A tile's box reaches past the mask.
    """
    bottom, right = int((boxes[:, 0] + boxes[:, 2]).max()), int((boxes[:, 1] + boxes[:, 3]).max())
    if bottom > mask.shape[0] or right > mask.shape[1]:
        raise ValueError(
            f"the mask {name!r} is {mask.shape[1]} x {mask.shape[0]} px but its image's tiles "
            f"reach {right} x {bottom} px; a mask must have its image's size (the validation "
            "gate checks it: run the validation stage again)"
        )


def tile_weights(
    serving_model: Any, pixels: np.ndarray, class_index: int, batch_size: int
) -> np.ndarray:
    """What an image's answer takes from each of its tiles: the weights of their maps.

    Args:
        serving_model: The packaged tile model.
        pixels: ``(n, size, size, C)`` the image's tiles.
        class_index: The class explained.
        batch_size: Tiles per forward pass.

    Returns:
        ``(n,)`` in [0, 1]: each tile's attention weight divided by the image's largest, for a
        model combined by its attention head; else each tile's probability of the class
        (test-time views averaged, as the image rows are made).
    """
    if serving_model.attention_head is not None:
        features = penultimate_features(serving_model.forward, pixels, batch_size)
        attended = serving_model.attended(features, np.zeros(len(pixels), np.int64), 1)
        if attended is not None:
            attention = np.asarray(attended[1], dtype=np.float64)
            return attention / attention.max() if attention.max() > 0 else attention
    parts = [
        serving_model.averaged_proba(pixels[start : start + batch_size])[:, class_index]
        for start in range(0, len(pixels), batch_size)
    ]
    return np.concatenate(parts).astype(np.float64)


def tiled_map(
    classifier: Any,
    pixels: np.ndarray,
    boxes: np.ndarray,
    shape: tuple[int, int],
    class_index: int,
    weights: np.ndarray,
    params: dict,
) -> np.ndarray:
    """An image's Grad-CAM stitched from its tiles of highest weight, at the image's size.

    Args:
        classifier: The tile classifier.
        pixels: ``(n, size, size, C)`` the image's tiles.
        boxes: ``(n, 4)`` their boxes in the image's pixels.
        shape: The image's ``(height, width)``.
        class_index: The class explained.
        weights: ``(n,)`` the tiles' weights (:func:`tile_weights`).
        params: The ``reporting`` parameters (``explanation.max_tiles``, ``gradcam.layer``).

    Returns:
        ``float32`` ``shape`` (:func:`~breast_cancer_pipeline.explain.stitch_maps`).
    """
    from breast_cancer_pipeline import explain  # noqa: PLC0415 - Grad-CAM imports TensorFlow

    limit = int(params["explanation"]["max_tiles"])
    chosen = np.sort(np.argsort(-np.asarray(weights), kind="stable")[:limit])
    cams = explain.grad_cam(
        classifier, pixels[chosen], class_index, layer=params["gradcam"]["layer"]
    )
    return explain.stitch_maps(cams, boxes[chosen], shape, weights[chosen])


def _tiling_keys(serving_model: Any, model_input: Mapping[str, Any], params: dict) -> dict:
    """How the tiles' maps were weighted and how many were explained per image at most."""
    spec = spec_of_arrays(model_input)
    by_attention = spec.aggregation == "attention" and serving_model.attention_head is not None
    weights = "attention" if by_attention else "probability of the class explained"
    return {"tile_weights": weights, "max_tiles": int(params["explanation"]["max_tiles"])}


def _cams(classifier: Any, x: np.ndarray, y: np.ndarray, params: dict) -> np.ndarray:
    """Grad-CAM of each image's class, ``reporting.batch_size`` images at a time."""
    from breast_cancer_pipeline.explain import grad_cam  # noqa: PLC0415 - imports TensorFlow

    size = int(params["batch_size"])
    parts = [
        grad_cam(classifier, x[s : s + size], y[s : s + size], layer=params["gradcam"]["layer"])
        for s in range(0, len(x), size)
    ]
    return np.concatenate(parts)
