"""The ``cv`` block of ``metrics.json``: per-fold AUROC, its spread, the pooled out-of-fold AUROC.

:func:`cross_validation_summary` reads the finetune stage's out-of-fold predictions (one per
development image, a ``fold`` column) and each fold model's test predictions
(``evaluation.folds`` >= 2):

- ``per_fold``: per fold, its images and AUROC with a stratified bootstrap interval;
- ``auroc_mean``, ``auroc_std`` (sample standard deviation over folds) and
  ``auroc_ci_low``/``auroc_ci_high``: a Student-t interval of the mean over the folds
  (clipped to [0, 1]);
- ``auroc_pooled`` with its interval: the AUROC of all out-of-fold predictions together;
- ``ensemble`` (``evaluation.ensemble``): the test AUROC of the average of the fold models
  beside the single model's, each with its bootstrap interval.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation.folds import fold_name
from breast_cancer_pipeline.evaluation.levels import image_groups
from breast_cancer_pipeline.evaluation.predictions import as_arrays


def _t_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """``(std, low, high)``: sample standard deviation, Student-t interval of the mean in [0, 1]."""
    from scipy import stats  # noqa: PLC0415  (scikit-learn's dependency)

    finite = values[~np.isnan(values)]
    if len(finite) < 2:
        return float("nan"), float("nan"), float("nan")
    std = float(np.std(finite, ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, len(finite) - 1)) * std / math.sqrt(len(finite))
    mean = float(np.mean(finite))
    # An AUROC lies in [0, 1]: so does its interval.
    return std, max(0.0, mean - half), min(1.0, mean + half)


def _ensemble(
    test_predictions: pd.DataFrame,
    fold_tests: tuple[pd.DataFrame, ...],
    class_names: list[str],
    boot: dict,
    keys: pd.DataFrame | None,
) -> dict[str, Any]:
    """The test AUROC of the mean of the fold models' probabilities, beside the single model."""
    paths = test_predictions["path"]
    probas = []
    for i, frame in enumerate(fold_tests, start=1):
        if sorted(frame["path"]) != sorted(paths):
            raise ValueError(
                f"{fold_name(i)}'s test predictions are not of the test split's images: "
                "rerun the finetune pipeline"
            )
        probas.append(as_arrays(frame.set_index("path").loc[paths].reset_index(), class_names)[1])
    y, single = as_arrays(test_predictions, class_names)
    mean = np.mean(probas, axis=0)
    boot = {**boot, "groups": image_groups(test_predictions, keys)}
    return {
        "members": len(fold_tests),
        "n_test": len(y),
        **{f"test_{k}": v for k, v in m.auroc_with_interval(y, mean, **boot).items()},
        **{f"single_test_{k}": v for k, v in m.auroc_with_interval(y, single, **boot).items()},
    }


def cross_validation_summary(
    oof_predictions: pd.DataFrame,
    test_predictions: pd.DataFrame,
    metadata: dict[str, Any],
    params: dict,
    evaluation: dict,
    keys: pd.DataFrame | None,
    *fold_test_predictions: pd.DataFrame,
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The ``cv`` block of ``metrics.json`` and the folds' MLflow metrics.

    Args:
        oof_predictions: One out-of-fold prediction per development image (``fold`` column).
        test_predictions: The single model's test predictions.
        metadata: The classifier's metadata (``class_names``).
        params: The ``reporting`` parameters (``bootstrap``).
        evaluation: The ``evaluation`` parameters (``folds``, ``ensemble``).
        keys: :func:`.levels.evaluation_keys`'s table: every interval resamples patients when
            one has several images; None: images alone.
        *fold_test_predictions: Each fold model's test predictions, fold 1 first.

    Returns:
        ``(cv, mlflow_metrics)``; NaN (an AUROC undefined on a one-class fold) as ``None``.
    """
    class_names, boot = [str(c) for c in metadata["class_names"]], params["bootstrap"]
    folds = {}
    for fold, rows in oof_predictions.groupby("fold", sort=True):
        y, proba = as_arrays(rows, class_names)
        folds[fold_name(int(fold))] = {
            "n_images": len(rows),
            **m.auroc_with_interval(y, proba, **boot, groups=image_groups(rows, keys)),
        }
    per_fold = np.array([f["auroc"] for f in folds.values()], dtype=float)
    std, low, high = _t_interval(per_fold, boot["confidence"])
    pooled = m.auroc_with_interval(
        *as_arrays(oof_predictions, class_names),
        **boot,
        groups=image_groups(oof_predictions, keys),
    )
    cv: dict[str, Any] = {
        "folds": len(folds),
        "n_images": len(oof_predictions),
        "auroc_mean": float(np.nanmean(per_fold)),
        "auroc_std": std,
        "auroc_ci_low": low,
        "auroc_ci_high": high,
        "ci_confidence": float(boot["confidence"]),
        "auroc_pooled": pooled["auroc"],
        "auroc_pooled_ci_low": pooled["auroc_ci_low"],
        "auroc_pooled_ci_high": pooled["auroc_ci_high"],
        "nested_selection": False,
        "per_fold": folds,
    }
    if evaluation["ensemble"]:
        cv["ensemble"] = _ensemble(test_predictions, fold_test_predictions, class_names, boot, keys)
    return m.json_safe(cv), _cv_tracked(cv)


def _cv_tracked(cv: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``cv.<name>``, ``cv.fold_<k>.<name>`` and ``cv.ensemble.<name>`` (finite numbers)."""
    flat = dict(cv)
    for name, fold in flat.pop("per_fold").items():
        flat.update({f"{name}.{k}": v for k, v in fold.items()})
    flat.update({f"ensemble.{k}": v for k, v in (flat.pop("ensemble", None) or {}).items()})
    return m.tracked_metrics("cv", flat)
