"""The ``calibration``, ``tta`` and ``conformal`` blocks of ``metrics.json`` (test split).

What the served model does to its probabilities, measured on the test split with bootstrap
intervals: ECE, Brier score and log loss before and after the temperature and floor, AUROC
with and without the test-time views, conformal coverage and set size.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation import conformal
from breast_cancer_pipeline.evaluation.levels import image_groups
from breast_cancer_pipeline.evaluation.predictions import as_arrays

from .parameters import check_positive_class

logger = logging.getLogger(__name__)


def _calibration_block(
    before: pd.DataFrame,
    after: pd.DataFrame,
    fitted: dict,
    names: list[str],
    params: dict,
    groups: np.ndarray | None,
) -> dict[str, Any]:
    """ECE (positive class, top label), Brier score and log loss before and after, with CIs."""
    pos, n_bins = names.index(params["positive_class"]), params["calibration_bins"]

    def statistic(y_: np.ndarray, proba_: np.ndarray) -> dict[str, float]:
        return {
            "ece_positive": m.binned_ece(y_ == pos, proba_[:, pos], n_bins),
            "ece_top_label": m.binned_ece(proba_.argmax(axis=1) == y_, proba_.max(axis=1), n_bins),
            "brier_score": m.brier_score(y_, proba_),
        }

    block = {k: fitted[k] for k in ("method", "temperature", "n_val")}
    for bound in ("temperature_ci_low", "temperature_ci_high"):  # absent: fitted before them
        block[bound] = fitted.get(bound, float("nan"))
    block["floor"] = fitted.get("floor", 0.0)  # absent: fitted before the floor existed
    for bound in ("floor_ci_low", "floor_ci_high"):
        block[bound] = fitted.get(bound, 0.0)
    block["fitted_on"] = fitted.get("fitted_on", "validation")
    block.update({k: fitted[k] for k in ("val_nll_before", "val_nll_after")})
    for suffix, frame in (("_before", before), ("_after", after)):
        y, proba = as_arrays(frame, names)
        values, _ = m.calibration_summary(y, proba, pos, n_bins)
        block.update({f"{k}{suffix}": v for k, v in values.items()})
        found = m.bootstrap_intervals(y, proba, statistic, **params["bootstrap"], groups=groups)
        block.update(m.interval_keys(found, suffix))
    return block


def _tta_block(
    with_tta: pd.DataFrame,
    without: pd.DataFrame,
    tta: dict,
    names: list[str],
    params: dict,
    groups: np.ndarray | None,
) -> dict[str, Any]:
    """Test AUROC with and without the test-time views (both recalibrated), with CIs."""
    block: dict[str, Any] = {"mode": tta["mode"], "passes": tta["passes"], "shift": tta["shift"]}
    y, plain_proba = as_arrays(without, names)
    augmented_proba = as_arrays(with_tta, names)[1]
    boot = {**params["bootstrap"], "groups": groups}
    plain = m.auroc_with_interval(y, plain_proba, **boot)
    # tta off: the same probabilities twice, one bootstrap (each costs seconds).
    same = np.array_equal(plain_proba, augmented_proba)
    augmented = plain if same else m.auroc_with_interval(y, augmented_proba, **boot)
    for suffix, values in (("_without_tta", plain), ("_with_tta", augmented)):
        block.update({key.replace("auroc", f"auroc{suffix}", 1): v for key, v in values.items()})
    block["auroc_gain"] = block["auroc_with_tta"] - block["auroc_without_tta"]
    return block


def _conformal_block(
    served: pd.DataFrame,
    found: dict,
    names: list[str],
    params: dict,
    groups: np.ndarray | None,
) -> dict[str, Any]:
    """Empirical test coverage and mean set size of the conformal sets, with CIs."""
    y, proba = as_arrays(served, names)
    threshold = found["threshold"]

    def statistic(y_: np.ndarray, proba_: np.ndarray) -> dict[str, float]:
        return conformal.coverage(proba_, y_, threshold)

    sizes = conformal.prediction_sets(proba, threshold).sum(axis=1)
    return {
        **found,
        "target_coverage": 1.0 - found["alpha"],
        "n_test": len(y),
        **conformal.coverage(proba, y, threshold),
        **m.interval_keys(
            m.bootstrap_intervals(y, proba, statistic, **params["bootstrap"], groups=groups)
        ),
        "set_sizes": {str(k): int((sizes == k).sum()) for k in range(1, len(names) + 1)},
    }


def calibration_report(
    test_predictions: pd.DataFrame,
    test_uncalibrated: pd.DataFrame,
    test_without_tta: pd.DataFrame,
    calibration: dict[str, Any],
    settings: dict[str, Any],
    metadata: dict[str, Any],
    params: dict,
    keys: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The ``calibration``, ``tta`` and ``conformal`` blocks of ``metrics.json`` (test split).

    Args:
        test_predictions: The served (views averaged, recalibrated) test predictions.
        test_uncalibrated: The same before the temperature.
        test_without_tta: The original images alone, recalibrated.
        calibration: The temperature and floor (:func:`.fits.recalibration.fit_calibration`).
        settings: The probability settings (:func:`.fits.conformal.serving_calibration`:
            ``tta``, ``conformal``).
        metadata: The classifier's metadata (class names).
        params: The ``reporting`` parameters (positive class, bins, bootstrap).
        keys: :func:`.levels.evaluation_keys`'s table: the intervals resample patients when
            one has several images; none: images alone.

    Returns:
        ``{"calibration": {...}, "tta": {...}, "conformal": {...}}``; every interval is a
        stratified bootstrap of the test split (``<name>_ci_low`` / ``<name>_ci_high``).
    """
    names = metadata["class_names"]
    check_positive_class(params["positive_class"], names)
    # The three tables hold the same images in the same order.
    groups = image_groups(test_predictions, keys)
    blocks = {
        "calibration": _calibration_block(
            test_uncalibrated, test_predictions, calibration, names, params, groups
        ),
        "tta": _tta_block(
            test_predictions, test_without_tta, settings["tta"], names, params, groups
        ),
        "conformal": _conformal_block(
            test_predictions, settings["conformal"], names, params, groups
        ),
    }
    c, t, s = blocks["calibration"], blocks["tta"], blocks["conformal"]
    logger.info(
        "Test: ECE(p(%s)) %.4f -> %.4f and Brier %.4f -> %.4f after T = %.3f, floor %.3f; "
        "AUROC %.4f "
        "without test-time views, %.4f with (%s); conformal coverage %.3f (target %.2f), "
        "mean set size %.2f",
        params["positive_class"],
        c["ece_positive_before"],
        c["ece_positive_after"],
        c["brier_score_before"],
        c["brier_score_after"],
        c["temperature"],
        c["floor"],
        t["auroc_without_tta"],
        t["auroc_with_tta"],
        t["mode"],
        s["coverage"],
        s["target_coverage"],
        s["mean_set_size"],
    )
    return blocks
