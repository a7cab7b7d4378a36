"""The ``explanation`` block of ``metrics.json``: Grad-CAM checked against the experts' masks.

For every test image whose manifest row has a lesion mask (``mask_path``), the mask is read
from the converted images (catalog ``intermediate_images``) and brought to the model input
exactly as its image was (:func:`breast_cancer_pipeline.masks.fit_mask`); the Grad-CAM of the
image's true class (:func:`breast_cancer_pipeline.explain.grad_cam`, at
``reporting.gradcam.layer``) is then scored against it
(:mod:`breast_cancer_pipeline.evaluation.explanation`). Images whose mask is empty (a normal
breast, a lesion that does not show in this view) are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation.explanation import explanation_summary, image_figures
from breast_cancer_pipeline.evaluation.levels import image_groups
from breast_cancer_pipeline.geometry import Geometry, geometry_of_arrays
from breast_cancer_pipeline.imaging import decode_image
from breast_cancer_pipeline.manifest import MASK_PATH
from breast_cancer_pipeline.masks import fit_mask, read_mask

logger = logging.getLogger(__name__)

#: Why there is no figure, by case (the block's ``note``).
_NO_MASKS = "no test image has a non-empty lesion mask (ingestion.mask_pattern)"
_TILES = "tiles (augmentation.tiles): the per-tile Grad-CAM is not scored against masks yet"


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
) -> dict[str, Any]:
    """Energy inside the mask and pointing game of the test images' Grad-CAM.

    Args:
        classifier: The trained classifier.
        model_input: The model-input arrays (``x_test``, ``y_test``, ``paths_test``).
        images: ``intermediate_images``: ``{path: loader}`` of converted images and masks.
        manifest: The validated manifest (``mask_path``).
        keys: ``evaluation_keys``: the patients, for the cluster bootstrap.
        metadata: The classifier's metadata (``class_names``).
        params: The ``reporting`` parameters (``gradcam.layer``, ``batch_size``,
            ``bootstrap``).

    Returns:
        The ``explanation`` block
        (:func:`~breast_cancer_pipeline.evaluation.explanation.explanation_summary`), with
        ``n`` 0 and a ``note`` when nothing can be scored.
    """
    if "tile_image_test" in model_input:
        return {"n": 0, "note": _TILES}
    paths = [str(p) for p in np.asarray(model_input["paths_test"])]
    lookup = manifest.set_index("path")[MASK_PATH] if MASK_PATH in manifest else pd.Series()
    mask_paths = [str(lookup.get(p, "") or "") for p in paths]
    rows = [i for i, mask in enumerate(mask_paths) if mask]
    if not rows:
        return {"n": 0, "note": _NO_MASKS}
    x = np.asarray(model_input["x_test"])
    geometry = geometry_of_arrays(model_input)
    color_mode = "rgb" if x.shape[-1] == 3 else "grayscale"
    masks = fitted_masks(
        images, [paths[i] for i in rows], [mask_paths[i] for i in rows], geometry, color_mode
    )
    lesion = masks.reshape(len(rows), -1).any(axis=1)
    rows, masks = [r for r, keep in zip(rows, lesion, strict=True) if keep], masks[lesion]
    if not rows:
        return {"n": 0, "note": _NO_MASKS}
    y = np.asarray(model_input["y_test"])[rows]
    cams = _cams(classifier, x[rows], y, params)
    groups = image_groups(pd.DataFrame({"path": [paths[i] for i in rows]}), keys)
    summary = explanation_summary(
        image_figures(cams, masks), y, metadata["class_names"], params["bootstrap"], groups
    )
    logger.info(
        "Explanations against %d expert masks (test): %.1f%% of the Grad-CAM inside the mask "
        "(an even map: %.1f%%), pointing game %.1f%%",
        summary["n"],
        100 * summary["energy_inside"],
        100 * summary["mask_area"],
        100 * summary["pointing_game"],
    )
    return m.json_safe({**summary, "class_explained": "true label"})


def _cams(classifier: Any, x: np.ndarray, y: np.ndarray, params: dict) -> np.ndarray:
    """Grad-CAM of each image's class, ``reporting.batch_size`` images at a time."""
    from breast_cancer_pipeline.explain import grad_cam  # noqa: PLC0415 - imports TensorFlow

    size = int(params["batch_size"])
    parts = [
        grad_cam(classifier, x[s : s + size], y[s : s + size], layer=params["gradcam"]["layer"])
        for s in range(0, len(x), size)
    ]
    return np.concatenate(parts)
