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
from breast_cancer_pipeline.pipelines.reporting.explanation import explanation_metrics, tile_weights
from breast_cancer_pipeline.tiles import TileSpec, spec_arrays, tile_image
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


def test_without_masks_the_block_says_why(inputs):
    model_input, store, manifest, keys = inputs
    metadata = {"class_names": CLASSES}
    none = manifest.assign(mask_path="")
    block = explanation_metrics(None, model_input, store, none, keys, metadata, PARAMS)
    assert block["n"] == 0 and "mask" in block["note"]


# --------------------------------------------------------------------- a network on tiles
TILED = TileSpec(size=32, stride=32)


class _TileModel:
    """A served tile model: p(malignant) of a tile is its brightest pixel / 250."""

    attention_head = None

    def averaged_proba(self, images):
        p = images.reshape(len(images), -1).max(axis=1) / 250.0
        return np.stack([1.0 - p, p], axis=1)


def _tiled_case(distractor: bool) -> tuple[np.ndarray, np.ndarray]:
    """64 x 64: an 8 x 16 lesion (250) in the top-left tile, its mask, and a distractor.

    The distractor, 8 x 8 px of 200 in the bottom-right tile, lies outside the mask.
    """
    image = np.full((64, 64, 1), 20, dtype=np.uint8)
    mask = np.zeros((64, 64), dtype=bool)
    mask[4:12, 4:20] = True
    image[mask] = 250
    if distractor:
        image[40:48, 40:48] = 200
    return image, mask


@pytest.fixture
def tiled(monkeypatch):
    """Two malignant test images cut in four tiles each; the bright pixels as each tile's CAM."""
    store, rows, tiles, index = {}, [], [], []
    for i, distractor in enumerate((True, False)):
        image, mask = _tiled_case(distractor)
        path, mask_path = f"malignant/{i}.png", f"malignant/{i}_mask.png"
        store[path], store[mask_path] = (
            partial(bytes, encode_png(image)),
            partial(bytes, encode_mask(mask)),
        )
        rows.append({"path": path, "group": f"P{i}", "mask_path": mask_path})
        tiles.append(tile_image(image, TILED))
        index += [i] * len(tiles[-1])
    model_input = {
        "x_test": np.concatenate([t.pixels for t in tiles]),
        "y_test": np.ones(len(index), dtype=np.int64),
        "tile_image_test": np.array(index),
        "tile_boxes_test": np.concatenate([t.boxes for t in tiles]),
        "image_y_test": np.array([1, 1]),
        "paths_test": np.array([r["path"] for r in rows]),
        **spec_arrays(TILED),
    }
    manifest = pd.DataFrame(rows)

    def bright(model, images, class_indices, layer=None):
        return (images[..., 0] > 100).astype(np.float32)

    monkeypatch.setattr(explain, "grad_cam", bright)
    return model_input, store, manifest, manifest[["path", "group"]]


def test_a_tile_models_map_is_stitched_from_its_tiles_weighted_by_their_scores(tiled):
    model_input, store, manifest, keys = tiled
    metadata = {"class_names": ["benign", "malignant"]}
    block = explanation_metrics(
        None, model_input, store, manifest, keys, metadata, PARAMS, _TileModel()
    )
    assert block["n"] == 2 and block["per_class"]["malignant"]["n"] == 2
    assert block["map"] == "stitched from tiles at the image's resolution"
    assert block["tile_weights"] == "probability of the class explained"
    assert block["max_tiles"] == PARAMS["explanation"]["max_tiles"]
    assert {"energy_inside_ci_low", "pointing_game_ci_high", "bootstrap"} <= set(block)
    # The first image's map: 1.0 on the 128 lesion px (its tile scores 250 / 250), 0.8 on
    # the 64 distractor px (200 / 250); the second's lies wholly inside its mask.
    first = 128 / (128 + 0.8 * 64)
    assert block["energy_inside"] == pytest.approx((first + 1.0) / 2)
    assert block["pointing_game"] == 1.0
    assert block["mask_area"] == pytest.approx(128 / 64**2)
    # One tile per image explained: the lesion's, of the highest score.
    one = base_params("reporting", explanation={"max_tiles": 1}, bootstrap={"n_resamples": 100})
    block = explanation_metrics(
        None, model_input, store, manifest, keys, metadata, one, _TileModel()
    )
    assert block["energy_inside"] == pytest.approx(1.0) and block["max_tiles"] == 1


class _AttendedModel(_TileModel):
    """A tile model combined by its attention head: the tiles' brightest pixels as attention."""

    attention_head = object()

    def forward(self, images):
        features = images.reshape(len(images), -1).max(axis=1, keepdims=True).astype(float)
        return features, self.averaged_proba(images)

    def attended(self, features, image_index, n_images):
        attention = features[:, 0] / features[:, 0].sum()
        return np.zeros((n_images, 2)), attention


def test_tiles_are_weighted_by_attention_or_by_the_probability_of_the_class_explained():
    pixels = np.zeros((3, 2, 2, 1), dtype=np.uint8)
    pixels[:, 0, 0, 0] = [50, 200, 100]
    np.testing.assert_allclose(tile_weights(_TileModel(), pixels, 1, 2), [0.2, 0.8, 0.4])
    np.testing.assert_allclose(tile_weights(_TileModel(), pixels, 0, 2), [0.8, 0.2, 0.6])
    # Attention, divided by the image's largest: the top tile weighs 1.
    np.testing.assert_allclose(tile_weights(_AttendedModel(), pixels, 0, 2), [0.25, 1.0, 0.5])


def test_the_block_says_the_tiles_were_weighted_by_attention(tiled):
    model_input, store, manifest, keys = tiled
    spec = TileSpec(size=32, stride=32, aggregation="attention")
    attention = {**model_input, **spec_arrays(spec)}
    metadata = {"class_names": ["benign", "malignant"]}
    block = explanation_metrics(
        None, attention, store, manifest, keys, metadata, PARAMS, _AttendedModel()
    )
    assert block["tile_weights"] == "attention" and block["n"] == 2
    # Attention 250 : 200 between the lesion's tile and the distractor's, as the scores were.
    assert block["energy_inside"] == pytest.approx((128 / (128 + 0.8 * 64) + 1.0) / 2)


def test_a_mask_smaller_than_its_tiled_image_is_named(tiled):
    model_input, store, manifest, keys = tiled
    small = np.ones((32, 32), dtype=bool)
    store = {**store, "malignant/1_mask.png": partial(bytes, encode_mask(small))}
    with pytest.raises(ValueError, match=r"'malignant/1_mask.png' is 32 x 32 px .* 64 x 64 px"):
        explanation_metrics(
            None, model_input, store, manifest, keys, {"class_names": CLASSES}, PARAMS, _TileModel()
        )
