"""The temperature and floor, fitted on the held-out predictions the served model is judged on."""

import numpy as np
import pytest

from breast_cancer_pipeline.evaluation import calibration as cal
from breast_cancer_pipeline.pipelines.reporting.fits.recalibration import (
    fit_calibration,
    held_out_source,
)
from tests.pipelines.reporting.test_calibration import EVALUATION, META, REPORTING, _frame


def test_the_temperature_is_fitted_on_out_of_fold_predictions_of_the_served_ensemble():
    assert held_out_source({"folds": 1, "ensemble": False}) == "validation"
    assert held_out_source({"folds": 3, "ensemble": False}) == "validation"
    assert held_out_source({"folds": 3, "ensemble": True}) == "out-of-fold"
    frame = _frame(["benign", "malignant"] * 10, np.linspace(0.1, 0.9, 20))
    evaluation = {**EVALUATION, "folds": 3, "ensemble": True}
    fitted, _ = fit_calibration(frame, META, evaluation, REPORTING)
    assert fitted["fitted_on"] == "out-of-fold" and fitted["n_val"] == 20


def test_the_held_out_table_comes_back_recalibrated_by_the_fitted_temperature():
    # Labels drawn from q; the model says q sharpened (log-odds tripled): overconfident.
    rng = np.random.default_rng(1)
    q = rng.uniform(0.05, 0.95, 120)
    labels = np.where(rng.random(120) < q, "malignant", "benign").tolist()
    raw = _frame(labels, q**3 / (q**3 + (1 - q) ** 3))
    fitted, calibrated = fit_calibration(raw, META, EVALUATION, REPORTING)
    assert fitted["method"] == EVALUATION["calibration"] and fitted["fitted_on"] == "validation"
    assert fitted["temperature"] > 1.5  # softens the tripled log-odds
    assert fitted["val_nll_after"] < fitted["val_nll_before"]
    columns = ["p_benign", "p_malignant"]
    temperature, floor = fitted["temperature"], fitted["floor"]
    expected = cal.apply_calibration(raw[columns].to_numpy(), temperature, floor)
    np.testing.assert_allclose(calibrated[columns].to_numpy(), expected, atol=1e-6)
    assert calibrated["predicted"].tolist() == raw["predicted"].tolist()  # ranking kept
    assert calibrated["path"].tolist() == raw["path"].tolist()
    assert raw["p_malignant"].to_numpy() == pytest.approx(q**3 / (q**3 + (1 - q) ** 3))
