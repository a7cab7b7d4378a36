"""The attention head fitted after the tile classifier, on its frozen tile features."""

from __future__ import annotations

import numpy as np
import pytest

from breast_cancer_pipeline.metrics import binary_auroc

ATTENTION = {
    "hidden": 16,
    "epochs": 30,
    "learning_rate": 1e-2,
    "patience": 5,
    "batch_size": 8,
    "max_tiles": None,
}


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
    for split, n, seed in (("train", 40, 0), ("val", 16, 1), ("test", 24, 2)):
        x, owner, labels = _tile_split(n, seed)
        arrays |= {
            f"x_{split}": x,
            f"y_{split}": labels[owner],
            f"tile_image_{split}": owner,
            f"image_y_{split}": labels,
        }
    return arrays


def test_the_head_learns_the_images_from_the_frozen_tile_features():
    from breast_cancer_pipeline.modeling import build_classifier, set_seed
    from breast_cancer_pipeline.pipelines.finetune.attention import fit_tile_attention, split_bags
    from breast_cancer_pipeline.training.attention import attention_aggregate

    set_seed(0)
    # An untrained tile network: its features still tell a bright tile from a dark one.
    classifier = build_classifier("small_cnn", 2, 16, 1, None, {})
    arrays = _model_input()
    head = fit_tile_attention(
        classifier,
        arrays,
        {"tiles": {"aggregation": "attention", "attention": ATTENTION}},
        {"seed": 3},
        {"batch_size": 32},
    )
    bags = split_bags(classifier, arrays, "test", 32)
    assert [len(bag) for bag in bags] == np.bincount(arrays["tile_image_test"]).tolist()
    proba, _ = attention_aggregate(head, bags)
    assert binary_auroc(arrays["image_y_test"] == 1, proba[:, 1]) >= 0.9


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
