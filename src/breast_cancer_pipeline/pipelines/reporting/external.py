"""The ``external`` block of ``metrics.json``: the external test site at the validation threshold.

The external split (``ingestion.external_dir``) is predicted as the test split is
(:func:`.predictions.predict_external_split`) and nothing is fitted on it. Its block holds
AUROC with a stratified bootstrap interval (same resampling and seed as the test split),
sensitivity and specificity at the validation threshold, the number of images, ECE and
Brier score; it is ``null`` when there is no external site.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation.levels import image_groups
from breast_cancer_pipeline.evaluation.predictions import as_arrays

from .parameters import check_positive_class

logger = logging.getLogger(__name__)


def external_metrics(
    predictions: pd.DataFrame,
    metadata: dict[str, Any],
    operating_point: dict[str, Any],
    params: dict,
    keys: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The ``external`` block of ``metrics.json``: the external site at the validation threshold.

    Args:
        predictions: The external site's predictions, as served.
        metadata: The classifier's metadata (``class_names``).
        operating_point: The threshold chosen on the validation split (never on this split).
        params: The ``reporting`` parameters (``positive_class``, ``bootstrap``,
            ``calibration_bins``).
        keys: :func:`.levels.evaluation_keys`'s table: the intervals resample the site's
            patients when one has several images; none: its images alone.

    Returns:
        ``n``, ``auroc`` (summary, as for test) and ``auroc_positive`` with their
        ``_ci_low``/``_ci_high``, ``threshold``, ``sensitivity``, ``specificity``, the
        confusion counts, ``ece_positive``, ``ece_top_label``, ``brier_score`` with its
        interval and ``log_loss``; an empty dict when there is no external site.

    Raises:
        ValueError: ``reporting.positive_class`` is not one of the model's classes.
    """
    if predictions.empty:
        return {}
    class_names, positive = metadata["class_names"], params["positive_class"]
    check_positive_class(positive, class_names)
    y, proba = as_arrays(predictions, class_names)
    pos = class_names.index(positive)
    threshold = float(operating_point["threshold"])
    groups = image_groups(predictions, keys)
    ci = m.summary_intervals(y, proba, pos, **params["bootstrap"], groups=groups)
    calibration, _ = m.calibration_summary(y, proba, pos, params["calibration_bins"])
    per_class = m.per_class_auroc(y, proba)
    block = {
        "n": len(predictions),
        "auroc": m.auroc(y, proba),
        "auroc_positive": float(per_class[pos]),
        **ci,
        "threshold": threshold,
        **m.binary_counts(y == pos, proba[:, pos] >= threshold),
        **calibration,
        "bootstrap": m.bootstrap_kind(groups),
    }
    logger.info(
        "External site: AUROC %.3f [%.3f, %.3f] on %d images; at p(%s) >= %.3f sensitivity "
        "%.3f, specificity %.3f",
        block["auroc"],
        block["auroc_ci_low"],
        block["auroc_ci_high"],
        block["n"],
        positive,
        threshold,
        block["sensitivity"],
        block["specificity"],
    )
    return block
