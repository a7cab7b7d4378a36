"""The attention head fitted after the tile classifier, on its frozen tile features."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _tile_split(n_images: int, seed: int) -> dict[str, np.ndarray]:
    """3-6 dark noise tiles per image; one bright tile in each image of class 1."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_images) % 2
    tiles, owner = [], []
    for i, label in enumerate(labels):
        n = int(rng.integers(3, 7))
        image_tiles = rng.integers(0, 60, (n, 16, 16, 1)).astype(np.uint8)
        if label:
            image_tiles[int(rng.integers(n)), 4:12, 4:12] = 220
        tiles.append(image_tiles)
        owner += [i] * n
    return np.concatenate(tiles), np.array(owner, dtype=np.int64), labels


def _model_input() -> dict[str, np.ndarray]:
    arrays = {"class_names": np.array(["benign", "malignant"])}
    for split, n, seed in (("train", 40, 0), ("val", 16, 1)):
        x, owner, labels = _tile_split(n, seed)
        arrays |= {
            f"x_{split}": x,
            f"y_{split}": labels[owner],
            f"tile_image_{split}": owner,
            f"image_y_{split}": labels,
        }
    return arrays


def test_the_head_is_fitted_on_each_images_frozen_tile_features(monkeypatch):
    """The node's bags are the tile network's features grouped by image, its classes the images'.

    The head's own learning is tested in ``tests/training/test_attention.py``; here the fit
    is recorded, not run.
    """
    from breast_cancer_pipeline.modeling import build_classifier, set_seed
    from breast_cancer_pipeline.pipelines.finetune.attention import fit_tile_attention
    from breast_cancer_pipeline.serving import compiled_forward
    from breast_cancer_pipeline.tiles import ATTENTION_DEFAULTS, TileSpec
    from breast_cancer_pipeline.training import attention

    fitted = {}
    monkeypatch.setattr(
        attention, "fit_attention_head", lambda *args, **kwargs: fitted.update(args=args, **kwargs)
    )
    set_seed(0)
    # A tile network with an internal background class (labels: mask): 3 outputs, 2 images'.
    classifier = build_classifier("small_cnn", 3, 16, 1, None, {})
    spec = TileSpec(size=16, stride=16, aggregation="attention", labels="mask")
    arrays = {
        **_model_input(),
        "class_names": np.array(["benign", "malignant", "background"]),
        "tiles": np.array(json.dumps(spec.config())),
    }
    fit_tile_attention(
        classifier,
        arrays,
        {"tiles": {**spec.config(), "attention": {"hidden": 8}}},
        {"seed": 3},
        {"batch_size": 32},
    )
    bags, labels, settings, seed = fitted["args"]
    features = np.asarray(compiled_forward(classifier)(arrays["x_train"])[0])
    owner = arrays["tile_image_train"]
    assert len(bags) == len(labels) == 40
    for i, bag in enumerate(bags):
        np.testing.assert_allclose(bag, features[owner == i], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, arrays["image_y_train"])
    assert settings == {**ATTENTION_DEFAULTS, "hidden": 8} and seed == 3
    val_bags, val_labels = fitted["validation"]
    assert [len(bag) for bag in val_bags] == np.bincount(arrays["tile_image_val"]).tolist()
    np.testing.assert_array_equal(val_labels, arrays["image_y_val"])
    assert fitted["num_classes"] == 2


def test_arrays_without_tiles_are_refused_with_the_parameter_to_set():
    from breast_cancer_pipeline.pipelines.finetune.attention import split_bags

    with pytest.raises(KeyError, match="augmentation.tiles"):
        split_bags(None, {"x_train": np.zeros((2, 16, 16, 1), np.uint8)}, "train", 8)


def test_the_head_is_fitted_only_when_tiles_are_combined_by_attention(monkeypatch):
    from breast_cancer_pipeline.pipelines.finetune import pipeline as finetune
    from tests.params import base_params

    def nodes(tiles):
        params = {
            "evaluation": base_params("evaluation"),
            "augmentation": {**base_params("augmentation"), "tiles": tiles},
        }
        monkeypatch.setattr(finetune, "run_parameters", lambda: params)
        return {node.name: node for node in finetune.create_pipeline().nodes}

    assert "fit_tile_attention" not in nodes(None)
    assert "fit_tile_attention" not in nodes({"size": 32, "stride": 32, "aggregation": "max"})
    fit = nodes({"size": 32, "stride": 32, "aggregation": "attention"})["fit_tile_attention"]
    assert fit.inputs[:2] == ["classifier", "model_input"] and fit.outputs == ["attention_head"]
