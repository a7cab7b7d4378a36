"""Temperature scaling: fitted by NLL on planted over- and underconfident sets."""

import numpy as np
import pytest

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation.calibration import (
    apply_temperature,
    fit_calibration,
    fit_temperature,
    negative_log_likelihood,
)


def _planted(n, true_temperature, seed):
    """Labels drawn from softmax(z); the model reports softmax(z / true_temperature)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, 3))
    truth = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in truth])
    reported = np.exp(z / true_temperature)
    return reported / reported.sum(axis=1, keepdims=True), y


def _ece_top(proba, y):
    return m.expected_calibration_error(
        m.calibration_bins(proba.argmax(axis=1) == y, proba.max(axis=1), 10)
    )


def test_apply_temperature_by_hand():
    p = np.array([[0.8, 0.2]])
    # log-odds log(4) halved at T = 2: odds 2, so p = 2/3.
    np.testing.assert_allclose(apply_temperature(p, 2.0), [[2 / 3, 1 / 3]], rtol=1e-6)
    np.testing.assert_allclose(apply_temperature(p, 0.5), [[16 / 17, 1 / 17]], rtol=1e-6)
    assert apply_temperature(p.astype(np.float32), 1.0).tolist() == p.astype(np.float32).tolist()
    assert apply_temperature(np.array([[1.0, 0.0]]), 3.0)[0, 1] > 0  # a zero gets mass
    assert apply_temperature(np.empty((0, 2)), 2.0).shape == (0, 2)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        apply_temperature(p, 0.0)


def test_overconfident_set_gets_t_above_one_and_its_ece_drops():
    # The model is overconfident: it sharpened the true logits by 2.5.
    proba, y = _planted(3000, 1 / 2.5, seed=0)
    temperature = fit_temperature(proba, y)
    assert temperature == pytest.approx(2.5, rel=0.1)
    calibrated = apply_temperature(proba, temperature)
    assert negative_log_likelihood(calibrated, y) < negative_log_likelihood(proba, y)
    before, after = _ece_top(proba, y), _ece_top(calibrated, y)
    assert before > 0.1 and after < before / 3
    # Ranking within each image is kept: the argmax does not move.
    np.testing.assert_array_equal(calibrated.argmax(axis=1), proba.argmax(axis=1))


def test_underconfident_set_gets_t_below_one():
    proba, y = _planted(3000, 2.0, seed=1)
    assert fit_temperature(proba, y) == pytest.approx(0.5, rel=0.1)


def test_fit_calibration_none_keeps_one_and_reports_the_nll():
    proba, y = _planted(500, 0.5, seed=2)
    fitted = fit_calibration(proba, y, "none")
    assert fitted["temperature"] == 1.0
    assert fitted["val_nll_before"] == fitted["val_nll_after"]
    fitted = fit_calibration(proba, y, "temperature")
    assert fitted["val_nll_after"] < fitted["val_nll_before"] and fitted["n_val"] == 500
    with pytest.raises(ValueError, match="the split is empty"):
        fit_temperature(np.empty((0, 3)), np.empty(0, int))


def test_the_temperature_interval_holds_the_planted_one_and_narrows_with_more_images():
    bootstrap = {"n_resamples": 100, "confidence": 0.95, "seed": 0}
    widths = []
    for n in (200, 3000):
        proba, y = _planted(n, 1 / 1.5, seed=3)  # overconfident: the true T is 1.5
        fitted = fit_calibration(proba, y, "temperature", bootstrap)
        low, high = fitted["temperature_ci_low"], fitted["temperature_ci_high"]
        assert low < fitted["temperature"] < high and low < 1.5 < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # about 1 / sqrt(15) as wide
    again = fit_calibration(proba, y, "temperature", bootstrap)  # seeded: reproducible
    assert again["temperature_ci_low"] == fitted["temperature_ci_low"]
    assert fit_calibration(proba, y, "none", bootstrap)["temperature_ci_low"] == 1.0
    assert np.isnan(fit_calibration(proba, y, "temperature")["temperature_ci_high"])
