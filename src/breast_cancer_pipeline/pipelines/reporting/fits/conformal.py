"""The conformal threshold the served model's prediction sets use, and its probability settings."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from breast_cancer_pipeline.evaluation import conformal
from breast_cancer_pipeline.evaluation.predictions import as_arrays
from breast_cancer_pipeline.evaluation.tta import tta_settings

logger = logging.getLogger(__name__)


def serving_calibration(
    calibration: dict[str, Any],
    val_predictions: pd.DataFrame,
    metadata: dict[str, Any],
    evaluation: dict,
    inference: dict,
) -> dict[str, Any]:
    """Fit the conformal threshold; gather the probability settings of ``serving.json``.

    Args:
        calibration: The temperature and floor
            (:func:`.recalibration.fit_calibration`).
        val_predictions: The recalibrated held-out predictions.
        metadata: The classifier's metadata (class names).
        evaluation: The ``evaluation`` parameters (the test-time views).
        inference: The ``inference`` parameters (``serving.conformal.alpha``).

    Returns:
        ``{"tta", "temperature", "calibration_floor", "conformal"}`` (see
        :data:`~breast_cancer_pipeline.serving.PROBABILITY_DEFAULTS`).
    """
    y, proba = as_arrays(val_predictions, metadata["class_names"])
    found = conformal.calibrate(proba, y, float(inference["serving"]["conformal"]["alpha"]))
    logger.info(
        "Conformal sets (LAC, alpha %.2f, validation n=%d): classes with p >= %.4f",
        found["alpha"],
        found["n_calibration"],
        found["threshold"],
    )
    return {
        "tta": tta_settings(evaluation),
        "temperature": float(calibration["temperature"]),
        "calibration_floor": float(calibration.get("floor", 0.0)),
        "conformal": found,
    }
