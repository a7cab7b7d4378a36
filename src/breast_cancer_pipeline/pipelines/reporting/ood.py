"""The ``ood`` block of ``metrics.json``: how the served out-of-distribution score does."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation.ood import KINDS, OodScore

logger = logging.getLogger(__name__)


def _rates(table: pd.DataFrame, column: str, threshold: float) -> dict[str, Any]:
    """Acceptance of the splits and detection of the OOD set (overall and per kind)."""
    inside = table[column] <= threshold
    ood = table["set"] == "ood"
    return {
        "val_acceptance": float(inside[table["set"] == "val"].mean()),
        "test_acceptance": float(inside[table["set"] == "test"].mean()),
        "ood_detection_rate": float((~inside[ood]).mean()),
        "ood_detection_rate_per_kind": {
            kind: float((~inside[ood & (table["kind"] == kind)]).mean())
            for kind in KINDS
            if (ood & (table["kind"] == kind)).any()
        },
    }


def ood_summary(
    score: OodScore, table: pd.DataFrame, ood_settings: dict
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The ``ood`` block of ``metrics.json`` and its MLflow figures.

    Args:
        score: The fitted score (its validation scores give the threshold).
        table: The score table of :func:`.fits.ood.fit_ood_score`.
        ood_settings: ``inference.serving.ood``.

    Returns:
        ``(block, mlflow_metrics)``: ``method``, ``accept_rate``, ``threshold``, the
        acceptance of validation and test, the OOD set's detection rate (overall and per
        kind), its size, and the same rates for the energy score at its own validation
        threshold (``comparison.energy``); the numeric figures as ``ood.<name>``.
    """
    rate = float(ood_settings["accept_rate"])
    threshold = score.threshold(rate)
    energy_val = table.loc[table["set"] == "val", "energy_score"].to_numpy(dtype=float)
    energy_threshold = OodScore("energy", np.sort(energy_val)).threshold(rate)
    block = {
        "method": score.method,
        "accept_rate": rate,
        "action": ood_settings["action"],
        "threshold": threshold,
        **_rates(table, "score", threshold),
        "n_ood": int((table["set"] == "ood").sum()),
        "comparison": {
            "energy": {
                "threshold": energy_threshold,
                **_rates(table, "energy_score", energy_threshold),
            }
        },
    }
    logger.info(
        "Out-of-distribution check: %.1f%% of test images accepted, %.1f%% of %d OOD images "
        "flagged (energy score: %.1f%%, %.1f%%)",
        100 * block["test_acceptance"],
        100 * block["ood_detection_rate"],
        block["n_ood"],
        100 * block["comparison"]["energy"]["test_acceptance"],
        100 * block["comparison"]["energy"]["ood_detection_rate"],
    )
    numeric = {k: v for k, v in block.items() if isinstance(v, float)}
    numeric.update(
        {f"ood_detection_rate_{k}": v for k, v in block["ood_detection_rate_per_kind"].items()}
    )
    return block, m.tracked_metrics("ood", numeric)
