"""Split-conformal sets: the finite-sample quantile by hand, coverage on held-out draws."""

import numpy as np
import pytest

from breast_cancer_pipeline.evaluation.conformal import (
    calibrate,
    coverage,
    prediction_sets,
    set_labels,
)


def test_threshold_is_the_corrected_quantile_by_hand():
    # Scores 1 - p(true) = 0.1, 0.2, ..., 0.9 (n = 9); alpha 0.2: ceil(10 * 0.8) / 9 = 8/9,
    # the 8th smallest score, 0.8: classes with p >= 0.2 are in the set.
    p_true = 1 - np.arange(1, 10) / 10
    proba = np.stack([p_true, 1 - p_true], axis=1)
    found = calibrate(proba, np.zeros(9, int), 0.2)
    assert found["threshold"] == pytest.approx(0.2)
    assert found["quantile_level"] == pytest.approx(8 / 9)
    # Too few images for the level: (n + 1)(1 - alpha) > n, every class is in every set.
    assert calibrate(proba[:3], np.zeros(3, int), 0.2)["threshold"] == 0.0
    with pytest.raises(ValueError, match="conformal.alpha must be in"):
        calibrate(proba, np.zeros(9, int), 1.0)


def test_sets_and_labels():
    proba = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.3, 0.3, 0.4], [0.2, 0.5, 0.3]])
    in_set = prediction_sets(proba, 0.3)
    labels = [["a"], ["a", "b"], ["a", "b", "c"], ["b", "c"]]
    assert set_labels(in_set, ["a", "b", "c"]) == labels
    # Never empty: below the threshold everywhere, the set is the most probable class.
    assert set_labels(prediction_sets(proba, 0.9), ["a", "b", "c"]) == [["a"], ["a"], ["c"], ["b"]]
    found = coverage(proba, np.array([0, 2, 2, 0]), 0.3)
    assert found == {"coverage": pytest.approx(2 / 4), "mean_set_size": pytest.approx(2.0)}


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_coverage_on_held_out_draws_is_one_minus_alpha(alpha):
    """Labels drawn from noisy Dirichlet probabilities; 1,000 to calibrate, 5,000 held out."""
    rng = np.random.default_rng(0)
    proba = rng.dirichlet([0.7, 0.7, 0.7], 6000)
    y = np.array([rng.choice(3, p=0.8 * p + 0.2 / 3) for p in proba])
    found = calibrate(proba[:1000], y[:1000], alpha)
    held_out = coverage(proba[1000:], y[1000:], found["threshold"])
    assert abs(held_out["coverage"] - (1 - alpha)) <= 0.05
    assert 1.0 < held_out["mean_set_size"] < 3.0  # informative: neither all singletons nor all
