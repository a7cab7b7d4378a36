"""The decision curve: the model's net benefit against treat-all and treat-none (test split).

Vickers and Elkin (2006): at a threshold probability ``t`` a reader would act on a case
whose probability of the positive class is at least ``t``; the net benefit counts the true
positives found minus the false positives, each weighed ``t / (1 - t)``, per case. The model
helps at ``t`` when its net benefit beats both acting on every case and acting on none. The
curve is drawn for the images and for each level (:mod:`.levels`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation.predictions import binary_view

from .parameters import check_positive_class

logger = logging.getLogger(__name__)

#: The scope of the images' own curve (beside each level's).
IMAGE_SCOPE = "image"


def thresholds_of(settings: dict) -> np.ndarray:
    """The threshold probabilities of ``reporting.decision_curve``: low to high by step."""
    low, high, step = settings["low"], settings["high"], settings["step"]
    count = int(np.floor((high - low) / step + 1e-9)) + 1
    return np.round(low + step * np.arange(count), 10)


def _scopes(
    test_predictions: pd.DataFrame, level_predictions: pd.DataFrame, positive: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``(is_positive, score)`` of the test split's images and of each level's keys."""
    scopes = {IMAGE_SCOPE: binary_view(test_predictions, positive)}
    test = level_predictions[level_predictions["split"] == "test"]
    for level, rows in test.groupby("level", sort=False):
        scopes[str(level)] = binary_view(rows, positive)
    return scopes


def decision_curves(
    test_predictions: pd.DataFrame,
    level_predictions: pd.DataFrame,
    metadata: dict[str, Any],
    params: dict,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Net benefit across thresholds at the image level and each level, and where it helps.

    Args:
        test_predictions: The test split's predictions, as served.
        level_predictions: :func:`.levels.level_predictions`'s table.
        metadata: The classifier's metadata (``class_names``).
        params: The ``reporting`` parameters (``positive_class``, ``decision_curve``).

    Returns:
        ``(table, block)``. The table (``plots/decision_curve.csv``): ``threshold``, then per
        scope (``image``, each level) its model's net benefit ``<scope>`` and
        ``<scope>_treat_all``, then ``treat_none``. The block (``metrics.json``
        ``decision_curve``): per scope ``n``, ``prevalence``, ``helps`` (the runs of
        thresholds ``[first, last]`` where the model beats both treat-all and treat-none),
        ``helps_from`` and ``helps_to`` (the lowest and highest such threshold, ``None`` if
        none); and ``thresholds`` (the setting).
    """
    positive = params["positive_class"]
    check_positive_class(positive, metadata["class_names"])
    thresholds = thresholds_of(params["decision_curve"])
    table = pd.DataFrame({"threshold": thresholds})
    block: dict[str, Any] = {"thresholds": dict(params["decision_curve"])}
    scopes = _scopes(test_predictions, level_predictions, positive)
    for scope, (is_positive, score) in scopes.items():
        curve = m.decision_curve(is_positive, score, thresholds)
        table[scope], table[f"{scope}_treat_all"] = curve["model"], curve["treat_all"]
        ranges = m.helpful_ranges(curve)
        block[scope] = {
            "n": len(score),
            "prevalence": float(np.mean(is_positive)) if len(score) else float("nan"),
            "helps": [list(r) for r in ranges],
            "helps_from": ranges[0][0] if ranges else None,
            "helps_to": ranges[-1][1] if ranges else None,
        }
        logger.info(
            "Decision curve (%s): the model helps at thresholds %s",
            scope,
            ", ".join(f"{a:g}-{b:g}" for a, b in ranges) or "none",
        )
    table["treat_none"] = 0.0
    return table, m.json_safe(block)
