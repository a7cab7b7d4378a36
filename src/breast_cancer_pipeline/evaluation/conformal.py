"""Split-conformal prediction sets (LAC), calibrated on the validation split.

For a miscoverage ``alpha`` (``inference.serving.conformal.alpha``, e.g. 0.1), a set holds
every class whose (calibrated) probability reaches a threshold chosen on the validation
split, so that on new images drawn like the validation ones the set holds the true class at
least ``1 - alpha`` of the time (Vovk et al. 2005; Sadinle, Lei & Wasserman 2019, "least
ambiguous set-valued classifiers", LAC):

1. the score of a validation image is ``1 - p(true class)``;
2. ``q`` is the ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile of the ``n`` scores (the
   finite-sample correction; ``q = 1`` when that level exceeds 1: every class is in the set);
3. the set of a new image is ``{class : p(class) >= 1 - q}``, and never empty: when no class
   reaches the threshold it is the most probable class alone (adding a class only raises
   the coverage).

The guarantee is marginal (over images), not per class or per patient, and holds only while
new images are exchangeable with the validation ones (same site, device and population).
A set of one class is the model's call at that level; two or more mean the model cannot
tell those classes apart for that image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def calibrate(proba: np.ndarray, y: np.ndarray, alpha: float) -> dict[str, Any]:
    """The LAC threshold on the class probabilities for miscoverage ``alpha``.

    Args:
        proba: ``(n, k)`` calibration (validation) probabilities, as served.
        y: Integer labels ``(n,)``.
        alpha: Miscoverage in (0, 1).

    Returns:
        ``{"method": "lac", "alpha", "threshold", "quantile_level", "n_calibration"}``;
        ``threshold`` is the probability a class needs to be in a set.

    Raises:
        ValueError: ``alpha`` is not in (0, 1) or there is no calibration image.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"inference.serving.conformal.alpha must be in (0, 1), got {alpha}")
    n = len(y)
    if n == 0:
        raise ValueError("conformal calibration needs validation predictions; the split is empty")
    proba = np.asarray(proba, dtype=np.float64)
    scores = 1.0 - proba[np.arange(n), np.asarray(y, dtype=int)]
    rank = math.ceil((n + 1) * (1.0 - alpha))  # the level rank / n: the rank-th smallest
    level = rank / n
    q = 1.0 if rank > n else float(np.sort(scores)[rank - 1])
    return {
        "method": "lac",
        "alpha": float(alpha),
        "threshold": max(0.0, 1.0 - q),
        "quantile_level": min(level, 1.0),
        "n_calibration": n,
    }


def prediction_sets(proba: np.ndarray, threshold: float) -> np.ndarray:
    """Which classes are in each image's set: ``proba >= threshold``, or the top class alone.

    Returns:
        ``(N, k)`` booleans; every row holds at least its most probable class.
    """
    proba = np.asarray(proba, dtype=np.float64)
    in_set = proba >= float(threshold)
    if len(proba):
        in_set[np.arange(len(proba)), proba.argmax(axis=1)] = True
    return in_set


def set_labels(in_set: np.ndarray, class_names: Sequence[str]) -> list[list[str]]:
    """The class names of each row of :func:`prediction_sets`, in the model's class order."""
    return [[class_names[j] for j in np.flatnonzero(row)] for row in in_set]


def coverage(proba: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    """Empirical coverage (share of sets holding the true class) and mean set size."""
    in_set = prediction_sets(proba, threshold)
    y = np.asarray(y, dtype=int)
    if len(y) == 0:
        return {"coverage": float("nan"), "mean_set_size": float("nan")}
    return {
        "coverage": float(in_set[np.arange(len(y)), y].mean()),
        "mean_set_size": float(in_set.sum(axis=1).mean()),
    }
