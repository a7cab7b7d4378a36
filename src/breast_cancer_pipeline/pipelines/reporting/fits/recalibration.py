"""The temperature and floor the served model applies, fitted on the held-out predictions."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from breast_cancer_pipeline.evaluation import calibration as cal
from breast_cancer_pipeline.evaluation.levels import image_groups
from breast_cancer_pipeline.evaluation.predictions import as_arrays, with_probabilities

logger = logging.getLogger(__name__)


def held_out_source(evaluation: dict) -> str:
    """What the temperature, threshold and conformal sets are fitted on.

    ``out-of-fold`` when the fold ensemble is served (``evaluation.ensemble``): every
    development image, each predicted by the fold model that never saw it. Otherwise
    ``validation``: the images that also chose the training checkpoint (best validation
    AUROC). The parameters' schema already refuses ``ensemble`` with fewer than 2 folds, and
    the pipeline wires the out-of-fold predictions on the same flag.
    """
    return "out-of-fold" if evaluation["ensemble"] else "validation"


def fit_calibration(
    val_predictions: pd.DataFrame,
    metadata: dict[str, Any],
    evaluation: dict,
    reporting: dict,
    keys: pd.DataFrame | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fit the temperature on the held-out predictions table; recalibrate it.

    Args:
        val_predictions: The held-out predictions before recalibration (the validation
            split's, or the out-of-fold ones: :func:`held_out_source`).
        metadata: The classifier's metadata (class names).
        evaluation: The ``evaluation`` parameters (``calibration``).
        reporting: The ``reporting`` parameters (``bootstrap``: the temperature's interval).
        keys: :func:`..levels.evaluation_keys`'s table: the intervals resample patients when
            one has several images; none: images alone.

    Returns:
        ``(calibration, calibrated)``: the fit
        (:func:`breast_cancer_pipeline.evaluation.calibration.fit_with_intervals`) with
        ``fitted_on``, and the table with recalibrated probabilities (the operating
        threshold and the conformal sets are chosen on it).
    """
    names = metadata["class_names"]
    y, proba = as_arrays(val_predictions, names)
    fitted = {
        **cal.fit_with_intervals(
            proba,
            y,
            evaluation["calibration"],
            reporting["bootstrap"],
            image_groups(val_predictions, keys),
        ),
        "fitted_on": held_out_source(evaluation),
    }
    logger.info(
        "Calibration (%s, %s, n=%d): T = %.3f (%.3f-%.3f), floor %.3f (%.3f-%.3f), "
        "NLL %.4f -> %.4f",
        fitted["method"],
        fitted["fitted_on"],
        fitted["n_val"],
        fitted["temperature"],
        fitted["temperature_ci_low"],
        fitted["temperature_ci_high"],
        fitted["floor"],
        fitted["floor_ci_low"],
        fitted["floor_ci_high"],
        fitted["val_nll_before"],
        fitted["val_nll_after"],
    )
    calibrated = cal.apply_calibration(proba, fitted["temperature"], fitted["floor"])
    return fitted, with_probabilities(val_predictions, calibrated, names)
