"""Cross-validation in the report: per-fold AUROC, its spread, the pooled out-of-fold AUROC.

With ``evaluation.folds`` = k ≥ 2 the finetune stage writes one out-of-fold prediction per
development image (``oof_predictions.csv``, a ``fold`` column) and each fold model's test
predictions. :func:`cross_validation_summary` turns them into the ``cv`` block of
``metrics.json``:

- ``folds``: per fold, its images and AUROC with a stratified bootstrap interval;
- ``auroc_mean``, ``auroc_std`` (sample standard deviation over folds) and
  ``auroc_ci_low``/``auroc_ci_high``: a Student-t interval of the mean over the k folds
  (clipped to [0, 1]);
- ``auroc_pooled`` with ``auroc_pooled_ci_low``/``_high``: the AUROC of all out-of-fold
  predictions together, with a stratified bootstrap interval
  (:func:`~breast_cancer_pipeline.metrics.bootstrap_intervals`);
- ``ensemble`` (``evaluation.ensemble: true``): the test AUROC of the average of the fold
  models beside the single model's, each with its bootstrap interval.

Every metric comes from :mod:`breast_cancer_pipeline.metrics`. The folds' MLflow metrics
(``cv.fold_<k>.auroc``, ``cv.auroc_mean``...) go out through the ``cv_mlflow_metrics``
catalog entry; :func:`plot_cv_folds` draws the per-fold figure and :func:`report_context`
gives the report's partial template (``_cv.html.j2``) what it shows.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation.folds import fold_name
from breast_cancer_pipeline.plotting import figure_png, pyplot
from breast_cancer_pipeline.templating import fmt

from .nodes import _encoded, _json_safe, classifier_predictions

#: What the report says of the estimate unless backbone and head selection are nested.
SELECTION_BIAS = (
    "The backbone and the head were selected (backbone_selection) on the same development "
    "images that the folds re-use, so the cross-validated figures are optimistically biased: "
    "selection is not nested inside the folds."
)


def _auroc_with_interval(y: np.ndarray, proba: np.ndarray, boot: dict) -> dict[str, float]:
    """``auroc`` and its stratified bootstrap ``auroc_ci_low``/``auroc_ci_high``."""
    (low, high) = m.bootstrap_intervals(
        y,
        proba,
        lambda y_, p_: {"auroc": m.auroc(y_, p_)},
        boot["n_resamples"],
        boot["confidence"],
        boot["seed"],
    )["auroc"]
    return {"auroc": m.auroc(y, proba), "auroc_ci_low": low, "auroc_ci_high": high}


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
        probas.append(_encoded(frame.set_index("path").loc[paths].reset_index(), class_names)[1])
    y, single = _encoded(test_predictions, class_names)
    mean = np.mean(probas, axis=0)
    return {
        "members": len(fold_tests),
        "n_test": len(y),
        **{f"test_{k}": v for k, v in _auroc_with_interval(y, mean, boot).items()},
        **{f"single_test_{k}": v for k, v in _auroc_with_interval(y, single, boot).items()},
    }


def predict_single_model_test(
    classifier: Any, model_input: dict[str, np.ndarray], params: dict
) -> pd.DataFrame:
    """The single model's test predictions, shown beside the served ensemble's.

    Args:
        classifier: The classifier fine-tuned on the single train/val split.
        model_input: The model-input arrays.
        params: The ``reporting`` parameters (``batch_size``).
    """
    return classifier_predictions(classifier, model_input, "test", params["batch_size"])


def cross_validation_summary(
    oof_predictions: pd.DataFrame,
    test_predictions: pd.DataFrame,
    metadata: dict[str, Any],
    params: dict,
    evaluation: dict,
    *fold_test_predictions: pd.DataFrame,
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The ``cv`` block of ``metrics.json`` and the folds' MLflow metrics.

    Args:
        oof_predictions: One out-of-fold prediction per development image (``fold`` column).
        test_predictions: The single model's test predictions.
        metadata: The classifier's metadata (``class_names``).
        params: The ``reporting`` parameters (``bootstrap``).
        evaluation: The ``evaluation`` parameters (``folds``, ``ensemble``).
        *fold_test_predictions: Each fold model's test predictions, fold 1 first.

    Returns:
        ``(cv, mlflow_metrics)``; NaN (an AUROC undefined on a one-class fold) as ``None``.
    """
    class_names, boot = [str(c) for c in metadata["class_names"]], params["bootstrap"]
    folds = {}
    for fold, rows in oof_predictions.groupby("fold", sort=True):
        y, proba = _encoded(rows, class_names)
        folds[fold_name(int(fold))] = {
            "n_images": len(rows),
            **_auroc_with_interval(y, proba, boot),
        }
    per_fold = np.array([f["auroc"] for f in folds.values()], dtype=float)
    std, low, high = _t_interval(per_fold, boot["confidence"])
    pooled = _auroc_with_interval(*_encoded(oof_predictions, class_names), boot)
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
        cv["ensemble"] = _ensemble(test_predictions, fold_test_predictions, class_names, boot)
    return _json_safe(cv), _mlflow_metrics(cv)


def _mlflow_metrics(cv: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``cv.<name>``, ``cv.fold_<k>.<name>`` and ``cv.ensemble.<name>`` (finite numbers)."""
    flat = dict(cv)
    for name, fold in flat.pop("per_fold").items():
        flat.update({f"{name}.{k}": v for k, v in fold.items()})
    flat.update({f"ensemble.{k}": v for k, v in (flat.pop("ensemble", None) or {}).items()})
    return {
        f"cv.{k}": {"value": float(v), "step": 0}
        for k, v in flat.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def plot_cv_folds(cv: dict[str, Any], params: dict) -> bytes:
    """Per-fold AUROC with bootstrap intervals, the mean's t-interval and the pooled AUROC."""
    plt = pyplot()
    names = list(cv["per_fold"])
    values = np.array([_num(cv["per_fold"][n]["auroc"]) for n in names])
    lows = np.array([_num(cv["per_fold"][n]["auroc_ci_low"]) for n in names])
    highs = np.array([_num(cv["per_fold"][n]["auroc_ci_high"]) for n in names])
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(names) + 2), 3.6))
    x = np.arange(len(names))
    ax.errorbar(x, values, yerr=[values - lows, highs - values], fmt="o", capsize=4)
    mean, low, high = (_num(cv[k]) for k in ("auroc_mean", "auroc_ci_low", "auroc_ci_high"))
    ax.axhline(mean, color="C1", lw=1.5, label=f"mean {mean:.3f}")
    if not math.isnan(low):
        ax.axhspan(low, high, color="C1", alpha=0.15, label="t-interval of the mean")
    ax.axhline(_num(cv["auroc_pooled"]), color="C2", ls="--", lw=1.2, label="pooled out-of-fold")
    bottom = np.nanmin([*lows, low, 0.5]) if not np.isnan(lows).all() else 0.5
    ax.set(xticks=x, xticklabels=names, ylabel="AUROC (held-out fold)")
    ax.set(xlim=(-0.5, len(names) - 0.5), ylim=(max(0.0, bottom - 0.05), 1.01))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="lower right")
    return figure_png(fig, params["figure_dpi"])


def report_context(
    metrics: dict[str, Any], figure: bytes | Callable[[], bytes] | None
) -> dict[str, Any] | None:
    """What ``_cv.html.j2`` shows: ``None`` without cross-validation (one split).

    Args:
        metrics: The test metrics, with their ``cv`` block when there are folds.
        figure: The PNG of :func:`plot_cv_folds` (or a loader returning it), if drawn.
    """
    cv = metrics.get("cv")
    if not cv:
        return None
    figure = figure() if callable(figure) else figure
    rows = [
        (name, str(fold["n_images"]), fmt(fold["auroc"]), _ci(fold, "auroc"))
        for name, fold in cv["per_fold"].items()
    ]
    ensemble = cv.get("ensemble")
    return {
        "folds": cv["folds"],
        "figure": base64.b64encode(figure).decode("ascii") if figure else None,
        "rows": rows,
        "mean": fmt(cv["auroc_mean"]),
        "std": fmt(cv["auroc_std"]),
        "mean_ci": _ci(cv, "auroc"),
        "pooled": fmt(cv["auroc_pooled"]),
        "pooled_ci": _ci(cv, "auroc_pooled"),
        "confidence": f"{100 * cv['ci_confidence']:.0f}%",
        "bias": None if cv.get("nested_selection") else SELECTION_BIAS,
        "ensemble": None
        if not ensemble
        else [
            (
                "single model",
                fmt(ensemble["single_test_auroc"]),
                _ci(ensemble, "single_test_auroc"),
            ),
            (
                f"average of {ensemble['members']} fold models",
                fmt(ensemble["test_auroc"]),
                _ci(ensemble, "test_auroc"),
            ),
        ],
    }


def _ci(values: dict[str, Any], key: str) -> str:
    return f"[{fmt(values.get(f'{key}_ci_low'))}, {fmt(values.get(f'{key}_ci_high'))}]"
