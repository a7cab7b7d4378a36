"""Temperature scaling (Guo et al. 2017), fitted on the validation predictions.

The classifier ends in a softmax, so its logits are not at hand; the log-probabilities are
the logits up to a per-image constant, which the softmax cancels:
``softmax(log(p) / T) = softmax(z / T)``. One temperature ``T`` divides them: ``T > 1``
softens an overconfident model, ``T < 1`` sharpens an underconfident one. The ranking of the
classes of an image never changes, so the argmax and a two-class AUROC stay the same.

``evaluation.calibration``: ``temperature`` fits ``T`` by minimising the negative
log-likelihood of the validation labels (scipy's bounded scalar minimiser over
:data:`TEMPERATURE_BOUNDS`); ``none`` keeps ``T = 1``. :func:`apply_temperature` is what the
served model applies after averaging the test-time views (:mod:`.tta`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The search range of the temperature: far wider than the 1-3 fitted to real networks,
#: narrow enough that a degenerate validation set (all correct) cannot drive T to 0.
TEMPERATURE_BOUNDS = (0.05, 20.0)

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


def _nll(log_p: np.ndarray, y: np.ndarray, temperature: float) -> float:
    z = log_p / temperature
    z = z - z.max(axis=1, keepdims=True)
    return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())


def negative_log_likelihood(proba: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL (natural log) of the labels ``y`` under ``proba`` rescaled by ``temperature``."""
    return _nll(_log_proba(proba), np.asarray(y, dtype=int), float(temperature))


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


def temperature_interval(
    proba: np.ndarray, y: np.ndarray, n_resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of the fitted temperature (stratified resamples).

    How far ``T`` would move on another draw of as many held-out images: on a few hundred
    images with noisy labels it spans 1 more often than not, and a temperature whose
    interval spans 1 is not told apart from no recalibration by the data it was fitted on.

    Args:
        proba: ``(N, k)`` probabilities the temperature is fitted on.
        y: Integer labels ``(N,)``.
        n_resamples: Bootstrap resamples (``reporting.bootstrap.n_resamples``).
        confidence: Coverage of the interval, in (0, 1).
        seed: Seed of the resampling.

    Returns:
        ``(low, high)``.
    """
    from breast_cancer_pipeline.metrics import bootstrap_intervals  # noqa: PLC0415

    def statistic(y_: np.ndarray, proba_: np.ndarray) -> dict[str, float]:
        return {"temperature": fit_temperature(proba_, y_)}

    y = np.asarray(y, dtype=int)
    return bootstrap_intervals(y, proba, statistic, n_resamples, confidence, seed)["temperature"]


def fit_calibration(
    proba: np.ndarray, y: np.ndarray, method: str, bootstrap: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Fit ``evaluation.calibration`` on validation predictions.

    Args:
        proba: ``(N, k)`` validation probabilities.
        y: Integer labels ``(N,)``.
        method: ``temperature`` or ``none`` (``T = 1``).
        bootstrap: ``reporting.bootstrap`` (``n_resamples``, ``confidence``, ``seed``): the
            temperature's interval (:func:`temperature_interval`); None or ``none``: no
            interval (NaN).

    Returns:
        ``{"method", "temperature", "temperature_ci_low", "temperature_ci_high", "n_val",
        "val_nll_before", "val_nll_after"}``.

    Raises:
        ValueError: An unknown ``method``, or no validation prediction.
    """
    if method not in ("temperature", "none"):
        raise ValueError(f"evaluation.calibration must be temperature or none, got {method!r}")
    temperature = fit_temperature(proba, y) if method == "temperature" else 1.0
    low = high = 1.0 if method == "none" else float("nan")
    if method == "temperature" and bootstrap is not None:
        low, high = temperature_interval(
            proba, y, bootstrap["n_resamples"], bootstrap["confidence"], bootstrap["seed"]
        )
    return {
        "method": method,
        "temperature": temperature,
        "temperature_ci_low": low,
        "temperature_ci_high": high,
        "n_val": len(y),
        "val_nll_before": negative_log_likelihood(proba, y),
        "val_nll_after": negative_log_likelihood(proba, y, temperature),
    }
