"""Temperature scaling (Guo et al. 2017), with an optional floor, fitted on held-out predictions.

The classifier ends in a softmax, so the log-probabilities stand in for its logits (the
softmax cancels the per-image constant): ``softmax(log(p) / T)``. ``T > 1`` softens the
probabilities, ``T < 1`` sharpens them; the ranking of an image's classes never changes, so
the argmax and a two-class AUROC stay the same.

``evaluation.calibration`` (:data:`METHODS`):

* ``temperature``: ``T`` minimising the negative log-likelihood of the held-out labels
  (:func:`fit_temperature`);
* ``temperature_floor``: ``T`` and a floor ``eps`` fitted together,
  ``(1 - eps) softmax(log(p) / T) + eps / k`` (:func:`fit_temperature_floor`: the
  temperature and uniform parts of Zhang, Kailkhura and Han 2020, "Mix-n-Match"); a fitted
  ``eps = 0`` is plain temperature scaling;
* ``none``: ``T = 1``.

:func:`fit_with_intervals` is what reporting fits; :func:`apply_calibration` is what the
served model applies after averaging the test-time views (:mod:`.tta`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The search range of the temperature: bounded, so that held-out images told apart without
#: error cannot drive ``T`` to 0.
TEMPERATURE_BOUNDS = (0.05, 20.0)

#: The search range of the floor: above 0.5, more than half of every answer would be the
#: uniform distribution.
FLOOR_BOUNDS = (0.0, 0.5)

#: The calibration methods of ``evaluation.calibration``.
METHODS = ("temperature", "temperature_floor", "none")

#: The smallest probability whose logarithm is taken (a float32 softmax can return 0).
_TINY = 1e-12


def _log_proba(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), _TINY, 1.0))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Class probabilities rescaled by ``temperature``: ``softmax(log(proba) / T)``.

    Args:
        proba: ``(N, k)`` class probabilities.
        temperature: ``T > 0``; ``1`` returns ``proba`` itself (no work, no rounding).

    Returns:
        ``float32`` array ``(N, k)``.

    Raises:
        ValueError: ``temperature`` is not a positive finite number.
    """
    temperature = float(temperature)
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"temperature must be a positive number, got {temperature}: re-run reporting"
        )
    if temperature == 1.0:
        return np.asarray(proba, dtype=np.float32)
    if len(proba) == 0:
        return np.asarray(proba, dtype=np.float32).reshape(0, np.shape(proba)[-1])
    return _softmax(_log_proba(proba) / temperature).astype(np.float32)


def check_floor(floor: float) -> float:
    """``floor`` as a float within :data:`FLOOR_BOUNDS`.

    Raises:
        ValueError: It is not a number in that range.
    """
    floor = float(floor)
    if not FLOOR_BOUNDS[0] <= floor <= FLOOR_BOUNDS[1]:
        raise ValueError(
            f"calibration floor must be within {list(FLOOR_BOUNDS)}, got {floor}: re-run reporting"
        )
    return floor


def apply_calibration(proba: np.ndarray, temperature: float, floor: float = 0.0) -> np.ndarray:
    """``(1 - floor) * apply_temperature(proba, temperature) + floor / k``.

    Args:
        proba: ``(N, k)`` class probabilities.
        temperature: ``T > 0``.
        floor: ``eps`` within :data:`FLOOR_BOUNDS`; ``0`` is :func:`apply_temperature` itself.

    Returns:
        ``float32`` array ``(N, k)``; the order of an image's classes is kept.

    Raises:
        ValueError: ``temperature`` or ``floor`` out of range.
    """
    scaled = apply_temperature(proba, temperature)
    floor = check_floor(floor)
    if floor == 0.0:
        return scaled
    k = scaled.shape[-1]
    return ((1.0 - floor) * scaled.astype(np.float64) + floor / k).astype(np.float32)


def undo_calibration(proba: np.ndarray, temperature: float, floor: float = 0.0) -> np.ndarray:
    """The probabilities :func:`apply_calibration` was given, from what it returned.

    For reading a served answer back before its calibration (the evaluation benchmark):
    the floor is taken off, then ``1 / T`` undoes the temperature.
    """
    floor = check_floor(floor)
    p = np.asarray(proba, dtype=np.float64)
    if floor:
        p = np.clip((p - floor / p.shape[-1]) / (1.0 - floor), 0.0, 1.0)
    return apply_temperature(p, 1.0 / float(temperature))


def _nll(log_p: np.ndarray, y: np.ndarray, temperature: float) -> float:
    z = log_p / temperature
    z = z - z.max(axis=1, keepdims=True)
    return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())


def _nll_floor(log_p: np.ndarray, y: np.ndarray, temperature: float, floor: float) -> float:
    z = log_p / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    p_true = e[np.arange(len(y)), y] / e.sum(axis=1)
    return float(-np.log((1.0 - floor) * p_true + floor / log_p.shape[1]).mean())


def negative_log_likelihood(
    proba: np.ndarray, y: np.ndarray, temperature: float = 1.0, floor: float = 0.0
) -> float:
    """Mean NLL (natural log) of ``y`` under ``proba`` recalibrated (:func:`apply_calibration`)."""
    log_p, y = _log_proba(proba), np.asarray(y, dtype=int)
    if floor:
        return _nll_floor(log_p, y, float(temperature), float(floor))
    return _nll(log_p, y, float(temperature))


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the NLL of ``y`` (scipy ``minimize_scalar``, bounded).

    Args:
        proba: ``(N, k)`` validation probabilities (after test-time augmentation, if any).
        y: Integer labels ``(N,)``.

    Returns:
        ``T`` within :data:`TEMPERATURE_BOUNDS`.

    Raises:
        ValueError: No validation prediction to fit on.
    """
    from scipy.optimize import minimize_scalar  # noqa: PLC0415

    if len(y) == 0:
        raise ValueError("temperature scaling needs validation predictions; the split is empty")
    log_p, y = _log_proba(proba), np.asarray(y, dtype=int)
    found = minimize_scalar(
        lambda t: _nll(log_p, y, t), bounds=TEMPERATURE_BOUNDS, method="bounded"
    )
    return float(found.x)


def fit_temperature_floor(proba: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The ``(T, eps)`` minimising the NLL of ``y`` under :func:`apply_calibration`.

    scipy's L-BFGS-B within :data:`TEMPERATURE_BOUNDS` and :data:`FLOOR_BOUNDS`, started
    from the plain temperature with ``eps = 0``; the result never has a higher NLL than
    that start.

    Args:
        proba: ``(N, k)`` validation probabilities (after test-time augmentation, if any).
        y: Integer labels ``(N,)``.

    Returns:
        ``(temperature, floor)``.

    Raises:
        ValueError: No validation prediction to fit on.
    """
    from scipy.optimize import minimize  # noqa: PLC0415

    start = fit_temperature(proba, y)
    log_p, y = _log_proba(proba), np.asarray(y, dtype=int)
    found = minimize(
        lambda w: _nll_floor(log_p, y, w[0], w[1]),
        np.array([start, 0.0]),
        method="L-BFGS-B",
        bounds=[TEMPERATURE_BOUNDS, FLOOR_BOUNDS],
    )
    if found.fun > _nll(log_p, y, start):
        return start, 0.0
    return float(found.x[0]), float(found.x[1])


def fit_map(proba: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float]:
    """``(T, eps)`` of ``evaluation.calibration`` ``method`` fitted on ``proba``, ``y``."""
    if method == "temperature_floor":
        return fit_temperature_floor(proba, y)
    return (fit_temperature(proba, y) if method == "temperature" else 1.0), 0.0


def temperature_interval(
    proba: np.ndarray, y: np.ndarray, n_resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of the fitted temperature (stratified resamples).

    How far ``T`` would move on another draw of as many held-out images; an interval that
    spans 1 does not tell ``T`` apart from no recalibration.

    Args:
        proba: ``(N, k)`` probabilities the temperature is fitted on.
        y: Integer labels ``(N,)``.
        n_resamples: Bootstrap resamples (``reporting.bootstrap.n_resamples``).
        confidence: Coverage of the interval, in (0, 1).
        seed: Seed of the resampling.

    Returns:
        ``(low, high)``.
    """
    return map_intervals(proba, y, "temperature", n_resamples, confidence, seed)["temperature"]


def map_intervals(
    proba: np.ndarray,
    y: np.ndarray,
    method: str,
    n_resamples: int,
    confidence: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of what ``method`` fits (:func:`fit_map`).

    Returns:
        ``{"temperature": (low, high), "floor": (low, high)}`` over stratified resamples of
        the held-out images, or of their patients (``groups``) when one has several images
        (:func:`breast_cancer_pipeline.metrics.bootstrap_intervals`).
    """
    from breast_cancer_pipeline.metrics import bootstrap_intervals  # noqa: PLC0415

    def statistic(y_: np.ndarray, proba_: np.ndarray) -> dict[str, float]:
        temperature, floor = fit_map(proba_, y_, method)
        return {"temperature": temperature, "floor": floor}

    y = np.asarray(y, dtype=int)
    return bootstrap_intervals(y, proba, statistic, n_resamples, confidence, seed, groups)


def fit_with_intervals(
    proba: np.ndarray,
    y: np.ndarray,
    method: str,
    bootstrap: dict[str, Any] | None = None,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit ``evaluation.calibration`` on held-out probabilities, with intervals and NLLs.

    :func:`fit_map`, the bootstrap intervals of what it fits (:func:`map_intervals`) and the
    negative log-likelihood before and after.

    Args:
        proba: ``(N, k)`` validation probabilities.
        y: Integer labels ``(N,)``.
        method: One of :data:`METHODS` (``none``: ``T = 1``, no floor).
        bootstrap: ``reporting.bootstrap`` (``n_resamples``, ``confidence``, ``seed``): the
            intervals of the temperature and the floor (:func:`map_intervals`); None: no
            interval (NaN).
        groups: The patient of each image: the intervals resample patients when one has
            several images.

    Returns:
        ``{"method", "temperature", "temperature_ci_low", "temperature_ci_high", "floor",
        "floor_ci_low", "floor_ci_high", "n_val", "val_nll_before", "val_nll_after"}``.

    Raises:
        ValueError: An unknown ``method``, or no validation prediction.
    """
    if method not in METHODS:
        raise ValueError(f"evaluation.calibration must be one of {METHODS}, got {method!r}")
    temperature, floor = fit_map(proba, y, method)
    nan = (float("nan"), float("nan"))
    intervals = {"temperature": (1.0, 1.0), "floor": (0.0, 0.0)} if method == "none" else {}
    if method != "none" and bootstrap is not None:
        intervals = map_intervals(proba, y, method, **bootstrap, groups=groups)
    if method == "temperature":
        intervals["floor"] = (0.0, 0.0)
    (t_low, t_high), (f_low, f_high) = (intervals.get(k, nan) for k in ("temperature", "floor"))
    return {
        "method": method,
        "temperature": temperature,
        "temperature_ci_low": t_low,
        "temperature_ci_high": t_high,
        "floor": floor,
        "floor_ci_low": f_low,
        "floor_ci_high": f_high,
        "n_val": len(y),
        "val_nll_before": negative_log_likelihood(proba, y),
        "val_nll_after": negative_log_likelihood(proba, y, temperature, floor),
    }
