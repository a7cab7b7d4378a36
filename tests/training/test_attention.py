"""The attention-MIL head learns which tile of a bag decides its label, and round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from breast_cancer_pipeline.metrics import binary_auroc

PARAMS = {
    "hidden": 16,
    "epochs": 20,
    "learning_rate": 1e-2,
    "patience": 5,
    "batch_size": 16,
    "max_tiles": None,
}


def _bags(n_images: int, seed: int):
    """Bags of 4-12 noise tiles; a positive bag has one tile whose first feature is high.

    The signal tile is 1 in up to 12: the bag's mean moves little, the right tile a lot.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_images) % 2)
    bags, signal = [], []
    for label in labels:
        bag = rng.normal(size=(int(rng.integers(4, 13)), 8)).astype(np.float32)
        where = int(rng.integers(len(bag)))
        if label:
            bag[where, 0] += 5.0
        bags.append(bag)
        signal.append(where)
    return bags, labels, np.array(signal)


@pytest.fixture(scope="module")
def trained():
    from breast_cancer_pipeline.training.attention import fit_attention_head

    train, y_train, _ = _bags(96, seed=1)
    val = _bags(48, seed=2)[:2]
    head = fit_attention_head(train, y_train, PARAMS, seed=0, validation=val, num_classes=2)
    return head, _bags(80, seed=3)


def test_the_head_finds_the_signal_tile_of_each_positive_bag(trained):
    from breast_cancer_pipeline.training.attention import attention_aggregate

    head, (bags, labels, signal) = trained
    proba, attention = attention_aggregate(head, bags)
    assert proba.shape == (80, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert binary_auroc(labels == 1, proba[:, 1]) >= 0.9
    for bag, weights in zip(bags, attention, strict=True):
        assert weights.shape == (len(bag),)
        np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-5)
    positives = np.flatnonzero(labels == 1)
    found = [int(np.argmax(attention[i])) == signal[i] for i in positives]
    assert np.mean(found) >= 0.8


def test_the_saved_head_gives_the_same_answers(trained, tmp_path):
    from breast_cancer_pipeline.modeling import load_model
    from breast_cancer_pipeline.training.attention import attention_aggregate

    head, (bags, _, _) = trained
    head.save(tmp_path / "attention_head.keras")
    loaded = load_model(tmp_path / "attention_head.keras")
    proba, attention = attention_aggregate(head, bags[:10])
    again, again_attention = attention_aggregate(loaded, bags[:10])
    np.testing.assert_allclose(again, proba, rtol=1e-6)
    for before, after in zip(attention, again_attention, strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-6)


def test_tile_rows_map_to_bags_and_back(trained):
    from breast_cancer_pipeline.training.attention import (
        aggregate_tile_features,
        attention_aggregate,
        bags_from_tiles,
    )

    head, (bags, _, _) = trained
    bags = bags[:5]
    # The tile rows of the five images, interleaved as a split's arrays may hold them.
    tile_image = np.concatenate([np.full(len(bag), i) for i, bag in enumerate(bags)])
    features = np.concatenate(bags)
    shuffle = np.random.default_rng(0).permutation(len(tile_image))
    tile_image, features = tile_image[shuffle], features[shuffle]
    regrouped = bags_from_tiles(features, tile_image, 5)
    for bag, again in zip(bags, regrouped, strict=True):
        assert sorted(map(tuple, again)) == sorted(map(tuple, bag))
    proba, tile_attention = aggregate_tile_features(head, features, tile_image, 5)
    expected, attention = attention_aggregate(head, regrouped)
    np.testing.assert_allclose(proba, expected, rtol=1e-6)
    for i in range(5):
        np.testing.assert_allclose(tile_attention[tile_image == i], attention[i], rtol=1e-6)
    with pytest.raises(ValueError, match=r"images \[5\] have no tile"):
        bags_from_tiles(features, tile_image, 6)


def test_max_tiles_caps_the_training_bags():
    from breast_cancer_pipeline.training.attention import pad_bags

    bags = [np.ones((9, 3)), np.ones((2, 3))]
    padded, mask = pad_bags(bags, max_tiles=4, rng=np.random.default_rng(0))
    assert padded.shape == (2, 4, 3)
    assert mask.sum(axis=1).tolist() == [4.0, 2.0]
    assert padded[1, 2:].sum() == 0
