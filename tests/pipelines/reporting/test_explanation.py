"""The ``explanation`` block: masks read from the store, fitted to the model input, scored.

A stand-in for Grad-CAM (the model input's brightness to the 4th power) keeps TensorFlow out:
it peaks on the planted bright lesion, so the scores say whether the masks line up with the
model input.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline import explain
from breast_cancer_pipeline.geometry import Geometry, fit_image, geometry_arrays
from breast_cancer_pipeline.imaging import encode_png
from breast_cancer_pipeline.masks import encode_mask
from breast_cancer_pipeline.pipelines.reporting.explanation import explanation_metrics
from tests.params import base_params

PARAMS = base_params("reporting", bootstrap={"n_resamples": 100})
CLASSES = ["benign", "malignant", "normal"]


def _case(i: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    """A 40 x 64 image (dark, a bright lesion at a place that moves with ``i``) and its mask."""
    image = np.full((40, 64, 1), 20, dtype=np.uint8)
    mask = np.zeros((40, 64), dtype=bool)
    if label != "normal":
        mask[8 + i : 16 + i, 10 + 6 * i : 22 + 6 * i] = True
        image[mask] = 250
    return image, mask


@pytest.fixture
def inputs(monkeypatch):
    """Store, manifest, model input (letterboxed 32 x 32), keys; the brightness as the CAM."""
    geometry = Geometry(32, 32, "letterbox")
    labels = ["benign", "benign", "malignant", "malignant", "normal", "malignant"]
    store, rows, x = {}, [], []
    for i, label in enumerate(labels):
        image, mask = _case(i, label)
        path, mask_path = f"{label}/{i}.png", f"{label}/{i}_mask.png"
        store[path] = partial(bytes, encode_png(image))
        store[mask_path] = partial(bytes, encode_mask(mask))
        has_mask = i != 5  # the last image has no mask
        rows.append({"path": path, "group": f"P{i // 2}", "mask_path": mask_path * has_mask})
        x.append(fit_image(image, geometry))
    model_input = {
        "x_train": np.stack(x),
        "x_test": np.stack(x),
        "y_test": np.array([CLASSES.index(label) for label in labels]),
        "paths_test": np.array([r["path"] for r in rows]),
        **geometry_arrays(geometry),
    }
    manifest = pd.DataFrame(rows)
    keys = manifest[["path", "group"]]

    def brightness(model, images, class_indices, layer=None):
        return (images[..., 0].astype(np.float32) / 255.0) ** 4

    monkeypatch.setattr(explain, "grad_cam", brightness)
    return model_input, store, manifest, keys


def test_masks_line_up_with_the_model_input_and_are_scored(inputs):
    model_input, store, manifest, keys = inputs
    block = explanation_metrics(
        None, model_input, store, manifest, keys, {"class_names": CLASSES}, PARAMS
    )
    assert block["n"] == 4  # the normal image's mask is empty, the last image has none
    assert block["pointing_game"] == 1.0
    assert block["energy_inside"] > 0.5 > 5 * block["mask_area"]
    assert set(block["per_class"]) == {"benign", "malignant"}
    assert block["per_class"]["malignant"]["n"] == 2
    assert block["bootstrap"] == "cluster"


def test_without_masks_or_with_tiles_the_block_says_why(inputs):
    model_input, store, manifest, keys = inputs
    metadata = {"class_names": CLASSES}
    none = manifest.assign(mask_path="")
    assert explanation_metrics(None, model_input, store, none, keys, metadata, PARAMS)["n"] == 0
    tiled = {**model_input, "tile_image_test": np.zeros(6, np.int64)}
    block = explanation_metrics(None, tiled, store, manifest, keys, metadata, PARAMS)
    assert block["n"] == 0 and "tiles" in block["note"]
