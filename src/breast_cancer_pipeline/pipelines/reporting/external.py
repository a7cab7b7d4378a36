"""The external test site: its predictions, its metrics block and its side-by-side rows.

The external split (``ingestion.external_dir``) is scored by the classifier the test split is
scored with, through the same prediction function, at the operating threshold chosen on the
validation split; nothing is fitted on it. Its block in ``metrics.json`` (``external``) holds
AUROC with a stratified bootstrap interval (``metrics.bootstrap_intervals``, same resamples and
seed as the test split), sensitivity and specificity at the validation threshold, the number of
images, ECE and Brier score; it is ``null`` when there is no external site.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.manifest import EXTERNAL_SPLIT
from breast_cancer_pipeline.templating import fmt

from .calibration import predict_split
from .nodes import _calibration, _check_positive, _encoded, _intervals

logger = logging.getLogger(__name__)


def predict_external_split(
    serving_model: Any, external_input: dict[str, np.ndarray], params: dict
) -> pd.DataFrame:
    """Class probabilities for every image of the external site, as served (like the test split).

    Args:
        serving_model: The packaged model (test-time views and temperature applied).
        external_input: ``external_model_input`` (``x_external``, ``y_external``,
            ``paths_external``, ``class_names``).
        params: The ``reporting`` parameters (``batch_size``).

    Returns:
        The columns of ``predict_test_split`` (``path``, ``label``, ``predicted``,
        ``p_<class>``); no rows without an external site.
    """
    if len(external_input[f"y_{EXTERNAL_SPLIT}"]) == 0:
        columns = ["path", "label", "predicted"]
        columns += [f"p_{c}" for c in external_input["class_names"]]
        return pd.DataFrame(columns=columns)
    return predict_split(serving_model, external_input, EXTERNAL_SPLIT, params["batch_size"])


def external_metrics(
    predictions: pd.DataFrame,
    metadata: dict[str, Any],
    operating_point: dict[str, Any],
    params: dict,
) -> dict[str, Any]:
    """The ``external`` block of ``metrics.json``: the external site at the validation threshold.

    Args:
        predictions: Output of :func:`predict_external_split`.
        metadata: The classifier's metadata (``class_names``).
        operating_point: The threshold chosen on the validation split (never on this split).
        params: The ``reporting`` parameters (``positive_class``, ``bootstrap``,
            ``calibration_bins``).

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
    _check_positive(positive, class_names)
    y, proba = _encoded(predictions, class_names)
    pos = class_names.index(positive)
    threshold = float(operating_point["threshold"])
    ci = _intervals(y, proba, pos, params["bootstrap"])
    calibration, _ = _calibration(y, proba, pos, params["calibration_bins"])
    per_class = m.per_class_auroc(y, proba)
    block = {
        "n": len(predictions),
        "auroc": m.auroc(y, proba),
        "auroc_positive": float(per_class[pos]),
        **ci,
        "threshold": threshold,
        **m.binary_counts(y == pos, proba[:, pos] >= threshold),
        **calibration,
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


def _with_ci(block: dict[str, Any], key: str) -> str:
    low, high = block.get(f"{key}_ci_low"), block.get(f"{key}_ci_high")
    if low is None or high is None:
        return fmt(block.get(key))
    return f"{fmt(block.get(key))} [{fmt(low)}, {fmt(high)}]"


def comparison_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]] | None:
    """Internal test and external site side by side, for the report; ``None`` without one.

    Args:
        metrics: ``metrics.json``'s content (the test metrics and its ``external`` block).

    Returns:
        ``(metric, internal test, external)`` rows, intervals in brackets.
    """
    external = metrics.get(EXTERNAL_SPLIT)
    if not external:
        return None
    positive = metrics["positive_class"]
    internal = {**metrics, "n": metrics["n_test"]}
    rows = [
        ("Images", "n"),
        ("AUROC", "auroc"),
        (f"AUROC {positive} vs rest", "auroc_positive"),
        ("Sensitivity", "sensitivity"),
        ("Specificity", "specificity"),
        (f"ECE of p({positive})", "ece_positive"),
        ("Brier score", "brier_score"),
    ]

    def cell(block: dict[str, Any], key: str) -> str:
        return str(block[key]) if key == "n" else _with_ci(block, key)

    return [(name, cell(internal, key), cell(external, key)) for name, key in rows]
