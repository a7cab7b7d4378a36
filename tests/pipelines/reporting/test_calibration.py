"""The calibration, tta and conformal blocks of the test split, and the report's section."""

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.evaluation import calibration as cal
from breast_cancer_pipeline.pipelines.reporting.calibration import calibration_report
from breast_cancer_pipeline.pipelines.reporting.nodes import compute_metrics
from breast_cancer_pipeline.pipelines.reporting.report import render_report
from tests.params import base_params

NAMES = ["benign", "malignant"]
META = {
    "class_names": NAMES,
    "backbone": "small_cnn",
    "image_size": 32,
    "channels": 1,
    "color_mode": "grayscale",
}
REPORTING = base_params("reporting", bootstrap={"n_resamples": 30, "seed": 0}, batch_size=7)
EVALUATION = base_params("evaluation", tta="flips_shifts", tta_passes=3, tta_shift=0.1)


def _frame(labels, pm):
    pm = np.asarray(pm, dtype=float)
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(len(pm))], "label": labels})
    frame["predicted"] = np.where(pm >= 0.5, "malignant", "benign")
    frame["p_benign"], frame["p_malignant"] = 1 - pm, pm
    return frame


SETTINGS = {
    "tta": {"mode": "flips", "passes": 2, "shift": 0.05},
    "conformal": {
        "method": "lac",
        "alpha": 0.1,
        "threshold": 0.3,
        "quantile_level": 0.9,
        "n_calibration": 80,
    },
}


@pytest.fixture(scope="module")
def overconfident():
    """``(raw, calibrated, fitted)``: 80 predictions and the same after temperature scaling."""
    # Labels drawn from q; the model reports q sharpened (log-odds tripled): overconfident.
    rng = np.random.default_rng(0)
    q = rng.uniform(0.05, 0.95, 80)
    labels = np.where(rng.random(80) < q, "malignant", "benign").tolist()
    raw = _frame(labels, q**3 / (q**3 + (1 - q) ** 3))
    y = (raw["label"] == "malignant").to_numpy().astype(int)
    proba = raw[["p_benign", "p_malignant"]].to_numpy()
    fitted = cal.fit_with_intervals(proba, y, "temperature", REPORTING["bootstrap"])
    calibrated = raw.copy()
    calibrated[["p_benign", "p_malignant"]] = cal.apply_temperature(proba, fitted["temperature"])
    return raw, calibrated, fitted


@pytest.mark.slow
def test_report_blocks_of_the_test_split(overconfident):
    raw, calibrated, fitted = overconfident
    y = (raw["label"] == "malignant").to_numpy().astype(int)
    blocks = calibration_report(calibrated, raw, raw, fitted, SETTINGS, META, REPORTING)
    c, t, s = blocks["calibration"], blocks["tta"], blocks["conformal"]
    assert fitted["temperature"] > 1
    assert c["temperature_ci_low"] < c["temperature"] < c["temperature_ci_high"]
    assert c["ece_positive_after"] < c["ece_positive_before"]
    assert c["brier_score_after"] < c["brier_score_before"]
    assert (
        c["ece_positive_after_ci_low"] <= c["ece_positive_after"] <= c["ece_positive_after_ci_high"]
    )
    assert t["auroc_gain"] == pytest.approx(t["auroc_with_tta"] - t["auroc_without_tta"])
    p = calibrated["p_malignant"].to_numpy()
    in_set = np.stack([1 - p >= 0.3, p >= 0.3], axis=1)
    assert s["coverage"] == pytest.approx(in_set[np.arange(80), y].mean())
    assert s["mean_set_size"] == pytest.approx(in_set.sum(axis=1).mean())
    assert sum(s["set_sizes"].values()) == 80


@pytest.mark.slow
def test_report_section_says_what_was_fitted_on_what(overconfident):
    raw, calibrated, fitted = overconfident
    labels = raw["label"].tolist()
    blocks = calibration_report(calibrated, raw, raw, fitted, SETTINGS, META, REPORTING)
    c, s = blocks["calibration"], blocks["conformal"]
    point = {
        "threshold": 0.5,
        "rule": "youden",
        "positive_class": "malignant",
        "val_sensitivity": 1.0,
        "val_specificity": 1.0,
        "n_val": 80,
    }
    metrics, mlflow_metrics, _ = compute_metrics(
        calibrated, META, point, REPORTING, calibration_report=blocks
    )
    assert metrics["conformal"]["coverage"] == s["coverage"]
    assert mlflow_metrics["test.calibration.temperature"]["value"] == fitted["temperature"]
    manifest = pd.DataFrame({"label": labels, "split": "test", "group": range(80)})
    html, card = render_report(metrics, point, META, manifest, calibrated, REPORTING)
    assert "Conformal prediction sets" in html and f"T = {fitted['temperature']:.3f}" in html
    interval = f"{c['temperature_ci_low']:.3f}-{c['temperature_ci_high']:.3f}"
    assert f"95% interval over resamples of the 80 images: {interval}" in card
    spans_one = c["temperature_ci_low"] <= 1.0 <= c["temperature_ci_high"]
    assert ("it spans 1" in html) == spans_one
    assert "Two or more classes" in card and "Test-time augmentation: flips, 2 views" in card
    assert "also chose the training checkpoint" in html and "80 validation images" in card
    # Fitted on the fold ensemble's out-of-fold predictions: the report says so.
    blocks = calibration_report(
        calibrated, raw, raw, {**fitted, "fitted_on": "out-of-fold"}, SETTINGS, META, REPORTING
    )
    metrics, _, _ = compute_metrics(calibrated, META, point, REPORTING, calibration_report=blocks)
    html, card = render_report(metrics, point, META, manifest, calibrated, REPORTING)
    assert "predicted by the fold model that never saw it" in html
    assert "80 out-of-fold images" in card and "checkpoint" not in html
    assert "floor eps" not in html  # plain temperature scaling: no floor to explain
    # With a floor (temperature_floor): what it is, its interval and the cap it sets.
    floored = {**fitted, "method": "temperature_floor", "floor": 0.2}
    floored.update(floor_ci_low=0.1, floor_ci_high=0.3)
    blocks = calibration_report(calibrated, raw, raw, floored, SETTINGS, META, REPORTING)
    assert blocks["calibration"]["floor"] == 0.2
    metrics, mlflow_metrics, _ = compute_metrics(
        calibrated, META, point, REPORTING, calibration_report=blocks
    )
    assert mlflow_metrics["test.calibration.floor"]["value"] == 0.2
    html, card = render_report(metrics, point, META, manifest, calibrated, REPORTING)
    for text in (html, card):
        assert "floor eps = 0.200 (95% interval 0.100-0.300)" in text
        assert "no class is given more than 0.900" in text
    assert "follow. The operating threshold was chosen after it." in card
    # Without the blocks (a model reported before them), no section.
    metrics, _, _ = compute_metrics(calibrated, META, point, REPORTING)
    html, card = render_report(metrics, point, META, manifest, calibrated, REPORTING)
    assert "Conformal prediction sets" not in html and "Two or more classes" not in card
