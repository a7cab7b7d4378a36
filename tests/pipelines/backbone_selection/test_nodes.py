import numpy as np
import pytest

from breast_cancer_pipeline.pipelines.backbone_selection.nodes import (
    auroc,
    class_weights,
    select_backbone,
    train_head,
)

PARAMS = {
    "candidates": {"big": {}, "small": {}, "bad": {}},
    "metric": "val_auroc",
    "tolerance": 0.02,
    "head": {"dropout": 0.0, "learning_rate": 0.01, "batch_size": 16},
}


def _record(backbone, auc, ms):
    return {
        "backbone": backbone,
        "weights": None,
        "val_auroc_mean": auc,
        "val_accuracy_mean": 0.5,
        "val_auroc_std": 0.0,
        "val_accuracy_std": 0.0,
        "extract_seconds": 1.0,
        "train_seconds": 1.0,
        "ms_per_image": ms,
    }


def test_near_tie_goes_to_the_cheaper_backbone():
    selected, table, metrics = select_backbone(
        PARAMS,
        _record("resnet101v2", 0.91, 40.0),
        _record("inception_v3", 0.90, 15.0),
        _record("small_cnn", 0.70, 1.0),
    )
    assert selected["candidate"] == "small"
    assert selected["backbone"] == "inception_v3"
    assert table["candidate"].tolist() == ["small", "big", "bad"]
    assert table["within_tolerance"].tolist() == [True, True, False]
    assert metrics["selection.big.val_auroc_mean"] == {"value": 0.91, "step": 0}


def test_outside_tolerance_the_best_wins():
    params = {**PARAMS, "tolerance": 0.001}
    selected, _, _ = select_backbone(
        params,
        _record("resnet101v2", 0.91, 40.0),
        _record("inception_v3", 0.90, 15.0),
        _record("small_cnn", 0.70, 1.0),
    )
    assert selected["backbone"] == "resnet101v2"


def test_candidate_mismatch_points_to_kedro_env():
    with pytest.raises(ValueError, match="KEDRO_ENV"):
        select_backbone(PARAMS, _record("a", 0.5, 1.0))


def test_class_weights_are_balanced():
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights == {0: pytest.approx(4 / 9), 1: pytest.approx(4 / 3), 2: 1.0}


def test_auroc_binary_and_multiclass():
    assert (
        auroc(np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]]))
        == 1.0
    )
    y = np.array([0, 1, 2, 0, 1, 2])
    perfect = np.eye(3)[y] * 0.8 + 0.1 / 1.5
    assert auroc(y, perfect) == pytest.approx(1.0)


def test_train_head_learns_separable_features():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    x = rng.normal(size=(80, 8)).astype("float32") + y[:, None] * 3.0
    features = {
        "features_train": x[::2],
        "features_val": x[1::2],
        "y_train": y[::2],
        "y_val": y[1::2],
        "extract_seconds": np.asarray(1.5),
        "ms_per_image": np.asarray(2.0),
    }
    params = {**PARAMS, "repeats": 2, "epochs": 30, "seed": 0}
    record = train_head(features, {"backbone": "small_cnn", "weights": None}, params)
    assert record["val_auroc_mean"] > 0.95
    assert record["repeats"] == 2
    assert record["extract_seconds"] == 1.5
    assert record["n_features"] == 8


def _separable_features(n=80, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, dim)).astype("float32") + y[:, None] * 1.0
    return {
        "features_train": x[::2],
        "features_val": x[1::2],
        "y_train": y[::2],
        "y_val": y[1::2],
        "extract_seconds": np.asarray(1.5),
        "ms_per_image": np.asarray(2.0),
    }


def test_extract_features_with_augmented_passes():
    from breast_cancer_pipeline.pipelines.backbone_selection.nodes import extract_features

    rng = np.random.default_rng(0)
    model_input = {
        "x_train": rng.integers(0, 255, (6, 16, 16, 1)).astype(np.uint8),
        "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "x_val": rng.integers(0, 255, (3, 16, 16, 1)).astype(np.uint8),
        "y_val": np.array([0, 1, 2]),
    }
    params = {"seed": 0, "extraction_batch_size": 4, "augmented_passes": 2}
    candidate = {"backbone": "small_cnn", "weights": None}
    spec = {"flip": "horizontal", "rotation": 0.2}
    out = extract_features(model_input, spec, candidate, params)
    train = out["features_train"]
    assert train.shape == (18, 128)
    np.testing.assert_array_equal(out["y_train"], np.tile(model_input["y_train"], 3))
    assert out["features_val"].shape == (3, 128)
    assert not np.allclose(train[:6], train[6:12])  # augmented views differ from clean ones
    assert not np.allclose(train[6:12], train[12:])  # and from each other
    assert int(out["n_params"]) > 0 and float(out["ms_per_image"]) > 0
    clean = extract_features(model_input, spec, candidate, {**params, "augmented_passes": 0})
    np.testing.assert_allclose(clean["features_train"], train[:6], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="augmented_passes"):
        extract_features(model_input, spec, candidate, {**params, "augmented_passes": -1})


SEARCH = {
    **PARAMS,
    "seed": 0,
    "head_search": {
        "n_trials": 4,
        "epochs": 5,
        "space": {
            "dropout": [0.0, 0.5],
            "learning_rate": [1e-3, 3e-2],
            "dense_units": [None, 16],
            "batch_size": [8, 16],
        },
    },
}


def test_search_head_tries_n_trials_and_keeps_the_best():
    from breast_cancer_pipeline.pipelines.backbone_selection.nodes import search_head

    selected = {"candidate": "small", "score": 0.5}
    other = _separable_features(seed=1)
    other["features_val"] = other["features_val"] * 0  # would score 0.5: must not be used
    best, history = search_head(selected, SEARCH, small=_separable_features(), big=other)
    trials = history["head_search.val_auroc"]
    assert [t["step"] for t in trials] == [0, 1, 2, 3]
    assert best["n_trials"] == 4
    assert best["score"] == max(t["value"] for t in trials) > 0.8
    assert set(best) >= {"dropout", "learning_rate", "dense_units", "batch_size"}
    assert 0.0 <= best["dropout"] <= 0.5 and 1e-3 <= best["learning_rate"] <= 3e-2
    assert best["batch_size"] in (8, 16) and best["dense_units"] in (None, 16)
    assert len(history["head_search.learning_rate"]) == 4
    again, _ = search_head(selected, SEARCH, small=_separable_features(), big=other)
    assert again == best  # seeded TPE


def test_search_head_with_no_trials_keeps_the_configured_head():
    from breast_cancer_pipeline.pipelines.backbone_selection.nodes import search_head

    params = {**SEARCH, "head_search": {**SEARCH["head_search"], "n_trials": 0}}
    best, history = search_head({"candidate": "small", "score": 0.7}, params)
    assert best == {**PARAMS["head"], "score": 0.7, "source": "backbone_selection.head"}
    assert history == {}


def test_comparison_chart_shows_every_candidate():
    from breast_cancer_pipeline.pipelines.backbone_selection.nodes import plot_comparison

    _, table, metrics = select_backbone(
        PARAMS,
        _record("resnet101v2", 0.91, 40.0),
        _record("inception_v3", 0.90, 15.0),
        _record("small_cnn", 0.70, 1.0),
    )
    assert metrics["selection.big.val_auroc_std"] == {"value": 0.0, "step": 0}
    table["repeats"] = 3
    fig = plot_comparison(table, PARAMS)
    left, right = fig.axes
    assert [t.get_text() for t in left.get_yticklabels()] == ["small", "big", "bad"]
    assert [round(p.get_width(), 2) for p in right.patches] == [15.0, 40.0, 1.0]
    assert "winner small" in fig._suptitle.get_text()
