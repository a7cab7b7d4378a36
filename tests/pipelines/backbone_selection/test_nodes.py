import io
import logging

import numpy as np
import pytest
from PIL import Image

from breast_cancer_pipeline import progress
from breast_cancer_pipeline.pipelines.backbone_selection.nodes import (
    TrialLogger,
    extract_features,
    fit_head,
    plot_comparison,
    search_head,
    select_backbone,
    standardise,
    train_head_on_features,
)
from tests.params import base_params


def _params(names=("big", "small", "bad"), **overrides):
    """conf/base's block with made-up candidates (by default ``big``, ``small``, ``bad``)."""
    params = base_params("backbone_selection", **{"tolerance": 0.02, **overrides})
    params["candidates"] = {name: {"backbone": "small_cnn", "weights": None} for name in names}
    return params


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


RECORDS = (
    _record("resnet101v2", 0.91, 40.0),
    _record("inception_v3", 0.90, 15.0),
    _record("small_cnn", 0.70, 1.0),
)


def test_near_tie_goes_to_the_cheaper_backbone():
    selected, table, metrics = select_backbone(_params(), *RECORDS)
    assert selected["candidate"] == "small"
    assert selected["backbone"] == "inception_v3"
    assert selected["score"] == 0.90
    assert table["candidate"].tolist() == ["small", "big", "bad"]
    assert table["rank"].tolist() == [1, 2, 3]
    assert table["within_tolerance"].tolist() == [True, True, False]
    assert metrics["selection.big.val_auroc_mean"] == {"value": 0.91, "step": 0}
    assert metrics["selection.small.ms_per_image"] == {"value": 15.0, "step": 0}


def test_candidates_outside_the_tolerance_follow_by_score_not_speed():
    records = (*RECORDS, _record("tiny_cnn", 0.60, 0.5))
    _, table, _ = select_backbone(_params(("big", "small", "bad", "worse")), *records)
    ranks = dict(zip(table["candidate"], table["rank"], strict=True))
    # small and big are within the tolerance (fastest first); bad (0.70) before worse (0.60),
    # though worse is faster.
    assert ranks == {"small": 1, "big": 2, "bad": 3, "worse": 4}


def test_outside_tolerance_the_best_wins():
    selected, _, _ = select_backbone(_params(tolerance=0.001), *RECORDS)
    assert selected["backbone"] == "resnet101v2"


def test_candidate_mismatch_names_the_candidates():
    with pytest.raises(ValueError, match=r"ran 1 candidates but the parameters list 3 \(big,"):
        select_backbone(_params(), _record("a", 0.5, 1.0))


def _separable_features(n=80, dim=8, shift=1.0, seed=0):
    """Two classes whose features differ by ``shift`` in every dimension."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, dim)).astype("float32") + y[:, None] * shift
    return {
        "features_train": x[::2],
        "features_val": x[1::2],
        "y_train": y[::2],
        "y_val": y[1::2],
        "extract_seconds": np.asarray(1.5),
        "ms_per_image": np.asarray(2.0),
    }


FAST_HEAD = {"dropout": 0.0, "learning_rate": 0.01, "batch_size": 16}


def test_train_head_on_features_learns_separable_features():
    features = _separable_features(shift=3.0)
    params = _params(repeats=2, epochs=30, seed=0, head=FAST_HEAD)
    record = train_head_on_features(features, {"backbone": "small_cnn", "weights": None}, params)
    assert record["val_auroc_mean"] > 0.95
    assert record["val_accuracy_mean"] > 0.8
    assert record["repeats"] == 2
    assert record["extract_seconds"] == 1.5
    assert record["n_features"] == 8


def test_train_head_on_features_learns_from_features_of_a_tiny_scale():
    """Random-init MobileNetV3Small's features are ~1e-11: unscaled, the head is constant."""
    features = _separable_features(shift=3.0)
    for key in ("features_train", "features_val"):
        features[key] = (features[key] * 1e-11).astype("float32")
    params = _params(repeats=1, epochs=30, seed=0, head=FAST_HEAD)
    record = train_head_on_features(
        features, {"backbone": "mobilenet_v3_small", "weights": None}, params
    )
    assert record["val_auroc_mean"] > 0.95


def test_grouped_training_steps_train_the_same_head():
    """``steps_per_execution`` only groups steps per compiled call: the same updates, same scores.

    Dropout on and an epoch that does not divide into groups (40 images, batches of 16: three
    steps, the last short) so that a regrouped random stream or a dropped batch would show.
    """
    features = _separable_features(shift=0.5)
    head = {**FAST_HEAD, "dropout": 0.3}
    scores = [
        fit_head(features, head, epochs=3, seed=0, predict_batch_size=8, steps_per_execution=k)
        for k in (1, 2, 64)
    ]
    assert scores[0]["val_auroc"] < 1.0  # not saturated: a different head would score apart
    assert scores[1] == scores[0]
    assert scores[2] == scores[0]


def test_standardise_uses_the_training_statistics_only():
    train = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    scaled_train, scaled_val = standardise(train, np.array([[5.0, 6.0]], dtype=np.float32))
    np.testing.assert_allclose(scaled_train, [[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(scaled_val, [[3.0, 1.0]])  # constant feature: only centred
    assert scaled_val.dtype == np.float32


def test_train_head_on_features_on_noise_scores_near_chance():
    """The same head on features that carry no label: the planted signal above is what it found."""
    features = _separable_features(shift=0.0)
    record = train_head_on_features(
        features,
        {"backbone": "small_cnn", "weights": None},
        _params(repeats=2, epochs=30, head=FAST_HEAD),
    )
    assert 0.2 < record["val_auroc_mean"] < 0.8


def _model_input():
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 255, (6, 16, 16, 1)).astype(np.uint8),
        "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "x_val": rng.integers(0, 255, (3, 16, 16, 1)).astype(np.uint8),
        "y_val": np.array([0, 1, 2]),
    }


def test_extract_features_with_augmented_passes_logs_its_progress(caplog):
    model_input = _model_input()
    params = _params(seed=0, extraction_batch_size=4, augmented_passes=2)
    candidate = {"backbone": "small_cnn", "weights": None}
    spec = {"flip": "horizontal", "rotation": 0.2}
    with caplog.at_level(logging.INFO):
        out = extract_features(model_input, spec, candidate, params)
    train = out["features_train"]
    assert train.shape == (18, 128)
    np.testing.assert_array_equal(out["y_train"], np.tile(model_input["y_train"], 3))
    assert out["features_val"].shape == (3, 128)
    assert not np.allclose(train[:6], train[6:12])  # augmented views differ from clean ones
    assert not np.allclose(train[6:12], train[12:])  # and from each other
    assert int(out["n_params"]) > 0 and float(out["ms_per_image"]) > 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("small_cnn (weights None): extracting features of 21 images" in m for m in messages)
    assert any("small_cnn: augmented passes: 12/12 images done" in m for m in messages)
    assert any("small_cnn: 128 features per image of 21 images" in m for m in messages)
    clean = extract_features(model_input, spec, candidate, {**params, "augmented_passes": 0})
    np.testing.assert_allclose(clean["features_train"], train[:6], rtol=1e-5, atol=1e-6)


def _search_params(n_trials=4):
    return _params(
        seed=0,
        head_search={
            "n_trials": n_trials,
            "epochs": 5,
            "storage": None,  # in memory (test_head_search_storage.py tests the database)
            "space": {
                "dropout": [0.0, 0.5],
                "learning_rate": [1e-3, 3e-2],
                "dense_units": [None, 16],
                "batch_size": [8, 16],
            },
        },
    )


@pytest.fixture
def published():
    """Every ``progress.publish_metrics`` call made during the test, as ``(metrics, step)``."""
    calls = []

    def listener(metrics, step):
        calls.append((dict(metrics), step))

    progress.add_listener(listener)
    yield calls
    progress.remove_listener(listener)


def test_search_head_tries_n_trials_keeps_the_best_and_reports_each_trial(published, caplog):
    selected = {"candidate": "small", "score": 0.5}
    other = _separable_features(seed=1)
    other["features_val"] = other["features_val"] * 0  # would score 0.5: must not be used
    with caplog.at_level(logging.INFO):
        best, history = search_head(
            selected, _search_params(), small=_separable_features(), big=other
        )
    assert [step for _, step in published] == [0, 1, 2, 3]
    scores = [m["head_search.val_auroc"] for m, _ in published]
    assert [m["head_search.best_val_auroc"] for m, _ in published] == list(
        np.maximum.accumulate(scores)
    )
    # The settings are the trials' params (nested runs), not metrics.
    assert set(published[0][0]) == {"head_search.val_auroc", "head_search.best_val_auroc"}
    assert best["n_trials"] == 4
    assert best["score"] == max(scores) > 0.8
    assert scores[best["trial"]] == best["score"]
    assert history == {
        "head_search.best_score": [{"step": 0, "value": best["score"]}],
        "head_search.best_trial": [{"step": 0, "value": float(best["trial"])}],
    }
    assert 0.0 <= best["dropout"] <= 0.5 and 1e-3 <= best["learning_rate"] <= 3e-2
    assert best["batch_size"] in (8, 16) and best["dense_units"] in (None, 16)
    lines = [r.getMessage() for r in caplog.records if "Head search trial" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == [
        f"Head search trial {i}/4" for i in (1, 2, 3, 4)
    ]
    assert all("ETA" in line and "learning_rate" in line for line in lines)
    again, _ = search_head(selected, _search_params(), small=_separable_features(), big=other)
    assert again == best  # seeded TPE


def test_trial_logger_eta_from_the_mean_trial_time(caplog):
    import optuna

    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.8, params={}, distributions={}))
    trial = optuna.trial.create_trial(
        value=0.75,
        params={"dropout": 0.1},
        distributions={"dropout": optuna.distributions.FloatDistribution(0.0, 0.5)},
    )
    study.add_trial(trial)
    now = [100.0]
    callback = TrialLogger("val_auroc", 10, clock=lambda: now[0])
    now[0] += 30.0  # this process's trial took 30 s: eight more take four minutes
    with caplog.at_level(logging.INFO):
        callback(study, study.trials[1])
    assert caplog.records[-1].getMessage() == (
        "Head search trial 2/10: val_auroc 0.7500 (best 0.8000), {'dropout': 0.1}, ETA 4 min 00 s"
    )


def test_search_head_with_no_trials_keeps_the_configured_head():
    params = _search_params(n_trials=0)
    best, history = search_head({"candidate": "small", "score": 0.7}, params)
    assert best == {**params["head"], "score": 0.7, "source": "backbone_selection.head"}
    assert history == {}


def _decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB")).astype(int)


def _bar_length(pixels: np.ndarray, colour: tuple[int, int, int]) -> int:
    """The longest horizontal run of ``colour`` (a bar's length in pixels)."""
    match = (np.abs(pixels - np.array(colour)).sum(axis=2) < 30).astype(int)
    return int(match.sum(axis=1).max())


def test_comparison_chart_is_a_png_with_one_bar_per_candidate():
    _, table, _ = select_backbone(_params(), *RECORDS)
    table["repeats"] = 3
    png = plot_comparison(table, _params())
    pixels = _decode(png)
    small = _decode(plot_comparison(table, _params(figure_dpi=50)))
    assert pixels.shape[1] == pytest.approx(2 * small.shape[1], rel=0.05)  # dpi is honoured
    # Right panel: ms per image, winner (15 ms) green, the other two (40 ms, 1 ms) grey.
    right = pixels[:, pixels.shape[1] // 2 + 20 :]
    green, grey = _bar_length(right, (44, 160, 44)), _bar_length(right, (127, 127, 127))
    assert green / grey == pytest.approx(15 / 40, abs=0.04)
    # Left panel: the metric; the winner's bar (0.90) is green too.
    assert _bar_length(pixels[:, : pixels.shape[1] // 2], (44, 160, 44)) > 0
