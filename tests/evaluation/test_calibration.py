"""Temperature scaling, with and without a floor: fitted by NLL on planted sets."""

import numpy as np
import pytest

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation.calibration import (
    apply_calibration,
    apply_temperature,
    fit_temperature,
    fit_temperature_floor,
    fit_with_intervals,
    negative_log_likelihood,
    undo_calibration,
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


def test_fit_with_intervals_none_keeps_one_and_reports_the_nll():
    proba, y = _planted(500, 0.5, seed=2)
    fitted = fit_with_intervals(proba, y, "none")
    assert fitted["temperature"] == 1.0
    assert fitted["val_nll_before"] == fitted["val_nll_after"]
    fitted = fit_with_intervals(proba, y, "temperature")
    assert fitted["val_nll_after"] < fitted["val_nll_before"] and fitted["n_val"] == 500
    with pytest.raises(ValueError, match="the split is empty"):
        fit_temperature(np.empty((0, 3)), np.empty(0, int))


def test_the_temperature_interval_holds_the_planted_one_and_narrows_with_more_images():
    bootstrap = {"n_resamples": 100, "confidence": 0.95, "seed": 0}
    widths = []
    for n in (200, 3000):
        proba, y = _planted(n, 1 / 1.5, seed=3)  # overconfident: the true T is 1.5
        fitted = fit_with_intervals(proba, y, "temperature", bootstrap)
        low, high = fitted["temperature_ci_low"], fitted["temperature_ci_high"]
        assert low < fitted["temperature"] < high and low < 1.5 < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # about 1 / sqrt(15) as wide
    again = fit_with_intervals(proba, y, "temperature", bootstrap)  # seeded: reproducible
    assert again["temperature_ci_low"] == fitted["temperature_ci_low"]
    assert fit_with_intervals(proba, y, "none", bootstrap)["temperature_ci_low"] == 1.0
    assert np.isnan(fit_with_intervals(proba, y, "temperature")["temperature_ci_high"])


def _noisy_labels(n, true_temperature, floor, seed):
    """As :func:`_planted`, but a fraction ``floor`` of the labels is drawn uniformly."""
    proba, y = _planted(n, true_temperature, seed)
    rng = np.random.default_rng(seed + 100)
    flipped = rng.random(n) < floor
    y[flipped] = rng.integers(0, 3, flipped.sum())
    return proba, y


def test_apply_calibration_by_hand_and_undone():
    p = np.array([[0.8, 0.2]])
    assert apply_calibration(p, 2.0).tolist() == apply_temperature(p, 2.0).tolist()
    # T = 2 gives [2/3, 1/3]; a floor of 0.3 keeps 0.7 of it and spreads 0.3 evenly.
    np.testing.assert_allclose(
        apply_calibration(p, 2.0, 0.3), [[0.7 * 2 / 3 + 0.15, 0.7 / 3 + 0.15]], rtol=1e-6
    )
    served = apply_calibration(np.array([[0.6, 0.3, 0.1]]), 0.5, 0.2)
    np.testing.assert_allclose(undo_calibration(served, 0.5, 0.2), [[0.6, 0.3, 0.1]], atol=1e-6)
    # The order of an image's classes is kept.
    assert served.argmax() == 0 and served[0, 1] > served[0, 2]
    with pytest.raises(ValueError, match="calibration floor must be within"):
        apply_calibration(p, 1.0, -0.1)


def test_the_floor_recovers_planted_label_noise_that_a_temperature_cannot():
    # Underconfident logits (T 0.5) and 20 % of the labels uniform: the shape of the hard demo.
    proba, y = _noisy_labels(6000, 2.0, 0.2, seed=4)
    temperature, floor = fit_temperature_floor(proba, y)
    assert temperature == pytest.approx(0.5, rel=0.15) and floor == pytest.approx(0.2, abs=0.04)
    plain = apply_temperature(proba, fit_temperature(proba, y))
    floored = apply_calibration(proba, temperature, floor)
    assert negative_log_likelihood(floored, y) < negative_log_likelihood(plain, y)
    assert _ece_top(floored, y) < _ece_top(plain, y) / 2
    fitted = fit_with_intervals(proba, y, "temperature_floor")
    assert (fitted["temperature"], fitted["floor"]) == (temperature, floor)
    assert fitted["val_nll_after"] == pytest.approx(negative_log_likelihood(floored, y), rel=1e-5)


def test_clean_labels_fit_no_floor_and_the_intervals_hold_the_planted_values():
    proba, y = _planted(3000, 1 / 1.5, seed=5)  # overconfident, no label noise
    temperature, floor = fit_temperature_floor(proba, y)
    assert floor < 0.02 and temperature == pytest.approx(fit_temperature(proba, y), rel=0.05)
    assert negative_log_likelihood(proba, y, temperature, floor) <= negative_log_likelihood(
        proba, y, fit_temperature(proba, y)
    )
    bootstrap = {"n_resamples": 60, "confidence": 0.95, "seed": 0}
    proba, y = _noisy_labels(1500, 2.0, 0.2, seed=6)
    fitted = fit_with_intervals(proba, y, "temperature_floor", bootstrap)
    assert fitted["floor_ci_low"] < 0.2 < fitted["floor_ci_high"]
    assert fitted["temperature_ci_low"] < fitted["temperature"] < fitted["temperature_ci_high"]
    plain = fit_with_intervals(proba, y, "temperature", bootstrap)
    assert (plain["floor"], plain["floor_ci_low"], plain["floor_ci_high"]) == (0.0, 0.0, 0.0)
