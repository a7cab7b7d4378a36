"""The operating threshold on the positive class's probability, chosen on held-out images."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation.predictions import binary_view

from ..parameters import check_positive_class

logger = logging.getLogger(__name__)


def choose_operating_point(
    val_predictions: pd.DataFrame, metadata: dict[str, Any], params: dict
) -> dict[str, Any]:
    """Choose the threshold on the positive class's probability, on the validation split.

    ``reporting.threshold`` is either a target sensitivity in (0, 1]: the highest threshold
    whose validation sensitivity reaches it (so specificity is as high as it can be), or
    ``youden``: the threshold maximising sensitivity + specificity - 1 (ties: the higher).
    See :func:`~breast_cancer_pipeline.metrics.sensitivity_threshold` and
    :func:`~breast_cancer_pipeline.metrics.youden_threshold`.

    Returns:
        ``{"positive_class", "rule", "threshold", "val_sensitivity", "val_specificity", "n_val"}``.

    Raises:
        ValueError: The positive class is unknown, or the validation split has no image of the
            positive class or none of the others.
    """
    positive, rule = params["positive_class"], params["threshold"]
    check_positive_class(positive, metadata["class_names"])
    is_pos, score = binary_view(val_predictions, positive)
    if is_pos.all() or not is_pos.any():
        raise ValueError(
            f"the validation split needs images of {positive!r} and of the other classes to "
            f"choose reporting.threshold; it has {int(is_pos.sum())} of {len(is_pos)}"
        )
    if rule == "youden":
        threshold, rule_text = m.youden_threshold(is_pos, score), "youden"
    else:
        threshold = m.sensitivity_threshold(is_pos, score, float(rule))
        rule_text = f"sensitivity>={float(rule):g}"
    counts = m.binary_counts(is_pos, score >= threshold)
    logger.info(
        "Operating point (%s, validation): p(%s) >= %.4f, sensitivity %.3f, specificity %.3f",
        rule_text,
        positive,
        threshold,
        counts["sensitivity"],
        counts["specificity"],
    )
    return {
        "positive_class": positive,
        "rule": rule_text,
        "threshold": threshold,
        "val_sensitivity": counts["sensitivity"],
        "val_specificity": counts["specificity"],
        "n_val": len(is_pos),
    }
