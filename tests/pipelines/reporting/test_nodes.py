import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from breast_cancer_pipeline.pipelines.reporting.nodes import (
    binary_auroc,
    bootstrap_auroc,
    calibration_bins,
    choose_operating_point,
    compute_metrics,
    curve_tables,
    expected_calibration_error,
    learning_curve_table,
)

NAMES = ["benign", "malignant", "normal"]
META = {"class_names": NAMES, "backbone": "small_cnn"}
PARAMS = {
    "positive_class": "malignant",
    "threshold": 0.95,
    "bootstrap": {"n_resamples": 300, "confidence": 0.95, "seed": 7},
    "calibration_bins": 10,
}


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


@pytest.mark.parametrize(
    ("rule", "threshold", "sensitivity", "specificity"),
    [
        (0.75, 0.6, 0.75, 2 / 3),  # highest threshold keeping 3 of 4 positives
        (0.5, 0.8, 0.5, 1.0),
        (1.0, 0.3, 1.0, 2 / 3),
        ("youden", 0.3, 1.0, 2 / 3),  # J: 0.5 at 0.8, 0.417 at 0.6, 0.667 at 0.3
    ],
)
def test_operating_point_on_validation(rule, threshold, sensitivity, specificity):
    point = choose_operating_point(_val(), META, {**PARAMS, "threshold": rule})
    assert point["threshold"] == pytest.approx(threshold)
    assert point["val_sensitivity"] == pytest.approx(sensitivity)
    assert point["val_specificity"] == pytest.approx(specificity)
    assert point["n_val"] == 7


@pytest.mark.parametrize("rule", [0, 1.5, "best", True])
def test_invalid_threshold_rule(rule):
    with pytest.raises(ValueError, match="reporting.threshold"):
        choose_operating_point(_val(), META, {**PARAMS, "threshold": rule})


def test_operating_point_needs_both_groups_and_a_known_class():
    only_benign = _val().assign(label="benign")
    with pytest.raises(ValueError, match="needs images of 'malignant'"):
        choose_operating_point(only_benign, META, PARAMS)
    with pytest.raises(ValueError, match="reporting.positive_class"):
        choose_operating_point(_val(), META, {**PARAMS, "positive_class": "cancer"})


def _test_split(n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n // 3)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba, _frame([NAMES[i] for i in y], proba)


def test_metrics_values_match_sklearn_and_the_threshold():
    y, proba, frame = _test_split()
    point = {"threshold": 0.4, "rule": "sensitivity>=0.95", "positive_class": "malignant"}
    metrics, mlflow_metrics, bins = compute_metrics(frame, META, point, PARAMS)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr"))
    for k, name in enumerate(NAMES):
        assert metrics["auroc_per_class"][name] == pytest.approx(roc_auc_score(y == k, proba[:, k]))
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
    assert metrics["auroc_ci_low"] < metrics["auroc"] < metrics["auroc_ci_high"]
    assert (
        metrics["auroc_positive_ci_low"]
        < metrics["auroc_positive"]
        < metrics["auroc_positive_ci_high"]
    )
    assert metrics["ece_positive"] == pytest.approx(expected_calibration_error(bins))
    assert (
        mlflow_metrics["test.auroc_malignant"]["value"] == metrics["auroc_per_class"]["malignant"]
    )
    json.dumps(metrics, allow_nan=False)  # strict JSON for dvc


def test_bootstrap_is_seeded_and_narrows_with_more_data():
    y, proba, _ = _test_split(90)
    first = bootstrap_auroc(y, proba, 1, 200, 0.95, seed=3)
    assert first == bootstrap_auroc(y, proba, 1, 200, 0.95, seed=3)
    assert first != bootstrap_auroc(y, proba, 1, 200, 0.95, seed=4)
    y4, proba4, _ = _test_split(900)
    wide = first["auroc"][1] - first["auroc"][0]
    narrow = bootstrap_auroc(y4, proba4, 1, 200, 0.95, seed=3)["auroc"]
    assert narrow[1] - narrow[0] < wide / 2


def test_binary_auroc_with_ties():
    assert binary_auroc(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.9, 0.1])) == 0.875
    assert np.isnan(binary_auroc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_calibration_bins_and_ece():
    bins = calibration_bins(np.array([0, 1, 1, 1]), np.array([0.1, 0.1, 0.9, 0.95]), 10)
    assert bins["count"].tolist() == [2, 2]
    assert bins["observed_fraction"].tolist() == [0.5, 1.0]
    # |0.1 - 0.5| * 2 + |0.925 - 1| * 2, over 4 images
    assert expected_calibration_error(bins) == pytest.approx((0.4 * 2 + 0.075 * 2) / 4)


def test_curve_tables_span_the_unit_square():
    _, _, frame = _test_split()
    roc, pr = curve_tables(frame, META, PARAMS)
    assert (roc.iloc[0]["fpr"], roc.iloc[0]["tpr"]) == (0.0, 0.0)
    assert (roc.iloc[-1]["fpr"], roc.iloc[-1]["tpr"]) == (1.0, 1.0)
    assert pr["recall"].max() == 1.0
    assert pr["precision"].between(0, 1).all()


def test_learning_curve_table_joins_the_phases():
    history = {
        "phase1": {"loss": [1.0, 0.8], "val_auc": [0.6, 0.7], "epoch": [0, 1]},
        "phase2": {"loss": [0.5], "val_auc": [0.9], "epoch": [2]},
    }
    table = learning_curve_table(history)
    assert table["epoch"].tolist() == [0, 1, 2]
    assert table["phase"].tolist() == ["phase1", "phase1", "phase2"]
    assert table["val_auc"].tolist() == [0.6, 0.7, 0.9]
