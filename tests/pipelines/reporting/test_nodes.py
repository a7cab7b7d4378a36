import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.pipelines.reporting.nodes import (
    compute_metrics,
    curve_tables,
    learning_curve_table,
)
from tests.params import base_params

NAMES = ["benign", "malignant", "normal"]
META = {"class_names": NAMES, "backbone": "small_cnn"}
PARAMS = base_params("reporting", bootstrap={"n_resamples": 300, "seed": 7})


def _frame(labels, proba):
    proba = np.asarray(proba, dtype=float)
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(len(labels))], "label": labels})
    frame["predicted"] = [NAMES[i] for i in proba.argmax(axis=1)]
    for i, name in enumerate(NAMES):
        frame[f"p_{name}"] = proba[:, i]
    return frame


def _val():
    # p(malignant): positives 0.9, 0.8, 0.6, 0.3; negatives 0.7, 0.2, 0.1.
    labels = ["malignant"] * 4 + ["benign", "normal", "benign"]
    pm = [0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1]
    return _frame(labels, [[(1 - p) / 2, p, (1 - p) / 2] for p in pm])


def _test_split(n=90, seed=0, strength=(1.5, 1.5, 1.5)):
    """Balanced planted logits: class k's own logit raised by ``strength[k]``."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n // 3)
    logits = rng.normal(size=(n, 3)) + np.eye(3)[y] * np.asarray(strength)
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba, _frame([NAMES[i] for i in y], proba)


POINT = {"threshold": 0.4, "rule": "sensitivity>=0.95", "positive_class": "malignant"}


def test_metrics_values_match_sklearn_and_the_threshold():
    y, proba, frame = _test_split()
    metrics, mlflow_metrics, bins = compute_metrics(frame, META, POINT, PARAMS)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr"))
    for k, name in enumerate(NAMES):
        assert metrics["auroc_per_class"][name] == pytest.approx(roc_auc_score(y == k, proba[:, k]))
    assert metrics["auroc_positive"] == metrics["auroc_per_class"]["malignant"]
    assert metrics["average_precision_positive"] == pytest.approx(
        average_precision_score(y == 1, proba[:, 1])
    )
    is_pos, called = y == 1, proba[:, 1] >= 0.4
    tp = int((is_pos & called).sum())
    assert metrics["tp"] == tp
    assert metrics["sensitivity"] == pytest.approx(tp / is_pos.sum())
    assert metrics["specificity"] == pytest.approx((~is_pos & ~called).sum() / (~is_pos).sum())
    assert metrics["ppv"] == pytest.approx(tp / called.sum())
    assert metrics["npv"] == pytest.approx((~is_pos & ~called).sum() / (~called).sum())
    assert metrics["f1"] == pytest.approx(
        2 * tp / (2 * tp + (called & ~is_pos).sum() + (is_pos & ~called).sum())
    )
    recalls = [np.mean(proba[y == k].argmax(axis=1) == k) for k in range(3)]
    assert metrics["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert metrics["accuracy"] == pytest.approx(np.mean(proba.argmax(axis=1) == y))
    # calibration, by the textbook formulas
    assert metrics["brier_score"] == pytest.approx(((proba - np.eye(3)[y]) ** 2).sum(axis=1).mean())
    assert metrics["log_loss"] == pytest.approx(-np.log(proba[np.arange(len(y)), y]).mean())
    assert metrics["ece_positive"] == pytest.approx(m.expected_calibration_error(bins))
    assert bins["count"].sum() == len(y)
    for key in ("auroc", "auroc_positive", "brier_score"):
        assert metrics[f"{key}_ci_low"] < metrics[key] < metrics[f"{key}_ci_high"]
    assert metrics["ci_confidence"] == 0.95 and metrics["bootstrap_resamples"] == 300
    assert (
        mlflow_metrics["test.auroc_malignant"]["value"] == metrics["auroc_per_class"]["malignant"]
    )
    for key in ("brier_score", "log_loss", "brier_score_ci_low", "brier_score_ci_high"):
        assert mlflow_metrics[f"test.{key}"] == {"value": metrics[key], "step": 0}
    json.dumps(metrics, allow_nan=False)  # strict JSON for dvc


def test_reliability_bins_are_those_of_the_positive_class():
    y, proba, frame = _test_split()
    _, _, bins = compute_metrics(frame, META, POINT, PARAMS)
    expected = m.calibration_bins(y == 1, proba[:, 1], PARAMS["calibration_bins"])
    pd.testing.assert_frame_equal(bins, expected)
    other = m.calibration_bins(y == 0, proba[:, 0], PARAMS["calibration_bins"])
    assert not bins.equals(other)


def test_intervals_are_seeded_and_narrow_with_more_data():
    _, _, frame = _test_split(90)
    keys = ("auroc_ci_low", "auroc_ci_high", "auroc_positive_ci_low", "brier_score_ci_high")

    def run(frame, seed):
        params = base_params("reporting", bootstrap={"n_resamples": 200, "seed": seed})
        metrics = compute_metrics(frame, META, POINT, params)[0]
        return {k: metrics[k] for k in keys}

    first = run(frame, 3)
    assert first == run(frame, 3)
    assert first != run(frame, 4)
    wide = first["auroc_ci_high"] - first["auroc_ci_low"]
    narrow = run(_test_split(900)[2], 3)
    assert narrow["auroc_ci_high"] - narrow["auroc_ci_low"] < wide / 2


def test_interval_is_defined_with_a_single_image_of_a_class():
    # 1 malignant image among 40: a plain bootstrap lacks it in ~36% of resamples
    # ((39/40)^40); the stratified one keeps it in each. With one positive, a resample's
    # AUROC is the share of its negatives ranked below that positive.
    rng = np.random.default_rng(1)
    y = np.array([0] * 20 + [1] + [2] * 19)
    proba = rng.dirichlet([1, 1, 1], len(y))
    proba[20] = [0.1, 0.8, 0.1]
    frame = _frame([NAMES[i] for i in y], proba)
    metrics = compute_metrics(frame, META, POINT, PARAMS)[0]
    below = proba[:, 1] < 0.8
    assert metrics["auroc_positive"] == pytest.approx(below[y != 1].mean())
    boot = PARAMS["bootstrap"]
    shares = [
        below[idx][y[idx] != 1].mean()
        for idx in m.stratified_resamples(y, boot["n_resamples"], boot["seed"])
    ]
    tail = (1 - boot["confidence"]) / 2 * 100
    expected = np.percentile(shares, [tail, 100 - tail])
    assert [metrics["auroc_positive_ci_low"], metrics["auroc_positive_ci_high"]] == pytest.approx(
        expected
    )


def _trapezoid(x, y):
    x, y = np.asarray(x), np.asarray(y)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def test_curve_tables_are_those_of_the_positive_class():
    # malignant is strongly separated, benign and normal weakly: the three AUROCs differ,
    # and 20 malignant of 100 images makes its prevalence distinct.
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [40, 20, 40])
    logits = rng.normal(size=(100, 3)) + np.eye(3)[y] * np.array([0.5, 3.0, 0.5])
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = _frame([NAMES[i] for i in y], proba)
    metrics = compute_metrics(frame, META, POINT, PARAMS)[0]
    roc, pr = curve_tables(frame, META, PARAMS)
    assert (roc.iloc[0]["fpr"], roc.iloc[0]["tpr"]) == (0.0, 0.0)
    assert (roc.iloc[-1]["fpr"], roc.iloc[-1]["tpr"]) == (1.0, 1.0)
    area = _trapezoid(roc["fpr"], roc["tpr"])
    assert area == pytest.approx(metrics["auroc_positive"])
    assert abs(area - metrics["auroc_per_class"]["benign"]) > 0.1
    assert abs(area - metrics["auroc_per_class"]["normal"]) > 0.1
    # the PR curve at the lowest threshold: every image called, precision = prevalence 20 / 100
    assert pr.iloc[0]["recall"] == 1.0 and pr.iloc[0]["precision"] == pytest.approx(0.2)
    # average precision = sum over points of (recall drop) x precision (sklearn's definition)
    ap = float(-np.sum(np.diff(pr["recall"]) * pr["precision"].to_numpy()[:-1]))
    assert ap == pytest.approx(metrics["average_precision_positive"])
    assert (roc["threshold"].between(0, 1)).all()


def test_curve_tables_refuse_an_unknown_positive_class():
    with pytest.raises(ValueError, match="reporting.positive_class='cancer'"):
        curve_tables(_val(), META, {**PARAMS, "positive_class": "cancer"})


def test_learning_curve_table_joins_the_phases():
    history = {
        "phase1": {"loss": [1.0, 0.8], "val_auc": [0.6, 0.7], "epoch": [0, 1]},
        "phase2": {"loss": [0.5], "val_auc": [0.9], "epoch": [2]},
    }
    table = learning_curve_table(history)
    assert table["epoch"].tolist() == [0, 1, 2]
    assert table["phase"].tolist() == ["phase1", "phase1", "phase2"]
    assert table["val_auc"].tolist() == [0.6, 0.7, 0.9]


def test_the_packaged_model_carries_the_levels_operating_points(monkeypatch):
    """With evaluation.levels, package_model is fed the levels' operating points (issue 27)."""
    from types import SimpleNamespace

    from breast_cancer_pipeline.pipelines.reporting import pipeline as reporting
    from breast_cancer_pipeline.pipelines.reporting.nodes import package_model, serving_settings
    from tests.serving._served import LEVEL_OPERATING_POINTS

    def nodes(evaluation: dict) -> dict:
        params = {"evaluation": {**base_params("evaluation"), **evaluation}}
        monkeypatch.setattr(reporting, "run_parameters", lambda: params)
        return {n.name: n for n in reporting.create_pipeline().nodes}

    plain, levelled = nodes({"levels": {}}), nodes({"levels": {"patient": ["group"]}})
    assert "serving_settings" not in plain
    assert "probability_settings" in plain["package_model"].inputs
    assert levelled["serving_settings"].inputs == ["probability_settings", "level_operating_points"]
    assert levelled["package_model"].inputs[3] == "serving_settings"

    settings = serving_settings({"temperature": 1.5}, LEVEL_OPERATING_POINTS)
    classifier = SimpleNamespace(input_shape=(None, 32, 32, 1))
    metadata = {**META, "image_size": 32, "channels": 1, "color_mode": "grayscale"}
    point = {"positive_class": "malignant", "threshold": 0.3, "rule": "youden"}
    served, _ = package_model(classifier, metadata, point, settings)
    assert served.config["levels"] == LEVEL_OPERATING_POINTS
    assert served.config["temperature"] == 1.5
    with pytest.raises(ValueError, match="levels aggregation 'median'"):
        serving_settings({}, {**LEVEL_OPERATING_POINTS, "aggregation": "median"})


def test_the_packaged_model_carries_the_attention_head_when_tiles_are_combined_by_it(monkeypatch):
    from breast_cancer_pipeline.pipelines.reporting import pipeline as reporting

    def nodes(aggregation: str, ensemble: bool = False) -> dict:
        params = {
            "evaluation": {**base_params("evaluation"), "folds": 3, "ensemble": ensemble},
            "augmentation": {"tiles": {"size": 32, "stride": 32, "aggregation": aggregation}},
        }
        monkeypatch.setattr(reporting, "run_parameters", lambda: params)
        return {n.name: n for n in reporting.create_pipeline().nodes}

    plain, attended = nodes("mean"), nodes("attention")
    assert "attach_attention_head" not in plain
    assert "packaged_model" in plain["package_model"].outputs
    assert attended["attach_attention_head"].inputs == ["packaged_tile_model", "attention_head"]
    assert attended["attach_attention_head"].outputs == ["packaged_model"]
    assert attended["predict_val_split"].inputs[-1] == "attention_head"
    # The head reads the single classifier's features, not an ensemble's.
    assert "attach_attention_head" not in nodes("attention", ensemble=True)
