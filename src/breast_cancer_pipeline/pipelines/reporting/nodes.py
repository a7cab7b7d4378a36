"""Reporting: validation-chosen operating point, test metrics with intervals, packaged model.

The binary view is "``reporting.positive_class`` vs the rest": its probability is the score,
and the threshold on it is chosen on the validation split (``reporting.threshold``: a target
sensitivity such as 0.95, or ``youden``), then applied unchanged to the test split.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ predictions
def _predict_split(classifier: Any, model_input: dict, split: str, batch_size: int) -> pd.DataFrame:
    class_names = [str(c) for c in model_input["class_names"]]
    proba = classifier.predict(
        np.asarray(model_input[f"x_{split}"]), batch_size=batch_size, verbose=0
    )
    y = np.asarray(model_input[f"y_{split}"])
    frame = pd.DataFrame(
        {
            "path": np.asarray(model_input[f"paths_{split}"]),
            "label": [class_names[i] for i in y],
            "predicted": [class_names[i] for i in proba.argmax(axis=1)],
        }
    )
    for i, name in enumerate(class_names):
        frame[f"p_{name}"] = proba[:, i].astype(float)
    return frame


def predict_test_split(
    classifier: Any, model_input: dict[str, np.ndarray], params: dict
) -> pd.DataFrame:
    """Class probabilities for every test image.

    Returns:
        One row per image: ``path``, ``label``, ``predicted`` (argmax) and ``p_<class>`` columns.
    """
    return _predict_split(classifier, model_input, "test", params["batch_size"])


def predict_val_split(
    classifier: Any, model_input: dict[str, np.ndarray], params: dict
) -> pd.DataFrame:
    """Class probabilities for every validation image (to choose the operating threshold).

    Returns:
        Same columns as :func:`predict_test_split`.
    """
    return _predict_split(classifier, model_input, "val", params["batch_size"])


# ------------------------------------------------------------------------------ statistics
def binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """AUROC of ``score`` for a binary outcome (Mann-Whitney U, ties counted half).

    Returns:
        The AUROC, or NaN when one of the two groups is empty.
    """
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_class_auroc(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC of every class (NaN for a class absent from ``y`` or from the rest)."""
    return np.array([binary_auroc(y == k, proba[:, k]) for k in range(proba.shape[1])])


def summary_auroc(y: np.ndarray, proba: np.ndarray) -> float:
    """AUROC: binary for two classes, else the macro average of the one-vs-rest AUROCs."""
    if proba.shape[1] == 2:
        return binary_auroc(y == 1, proba[:, 1])
    values = per_class_auroc(y, proba)
    return float("nan") if np.isnan(values).any() else float(values.mean())


def bootstrap_auroc(
    y: np.ndarray, proba: np.ndarray, positive: int, n_resamples: int, confidence: float, seed: int
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the summary AUROC and of the positive-vs-rest AUROC.

    Resamples in which a class is missing (AUROC undefined) are drawn again, up to
    ``10 * n_resamples`` draws in all.

    Returns:
        ``{"auroc": (low, high), "auroc_positive": (low, high)}`` (NaN when no resample was valid).
    """
    rng = np.random.default_rng(seed)
    summary, binary = [], []
    draws = 0
    while len(summary) < n_resamples and draws < 10 * n_resamples:
        draws += 1
        idx = rng.integers(0, len(y), len(y))
        value = summary_auroc(y[idx], proba[idx])
        if math.isnan(value):
            continue
        summary.append(value)
        binary.append(binary_auroc(y[idx] == positive, proba[idx, positive]))
    tail = (1.0 - confidence) / 2 * 100

    def interval(values: list[float]) -> tuple[float, float]:
        if not values:
            return float("nan"), float("nan")
        low, high = np.percentile(values, [tail, 100 - tail])
        return float(low), float(high)

    return {"auroc": interval(summary), "auroc_positive": interval(binary)}


def calibration_bins(is_positive: np.ndarray, score: np.ndarray, n_bins: int) -> pd.DataFrame:
    """Equal-width reliability bins of a predicted probability.

    Returns:
        One row per non-empty bin: ``bin_low``, ``bin_high``, ``mean_predicted``,
        ``observed_fraction`` and ``count``.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(score, edges[1:-1], right=False), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        members = which == b
        if members.any():
            rows.append(
                {
                    "bin_low": float(edges[b]),
                    "bin_high": float(edges[b + 1]),
                    "mean_predicted": float(score[members].mean()),
                    "observed_fraction": float(is_positive[members].mean()),
                    "count": int(members.sum()),
                }
            )
    return pd.DataFrame(
        rows, columns=["bin_low", "bin_high", "mean_predicted", "observed_fraction", "count"]
    )


def expected_calibration_error(bins: pd.DataFrame) -> float:
    """ECE: the count-weighted mean gap between predicted and observed frequency per bin."""
    if bins.empty:
        return float("nan")
    gaps = (bins["mean_predicted"] - bins["observed_fraction"]).abs()
    return float((gaps * bins["count"]).sum() / bins["count"].sum())


def binary_counts(is_positive: np.ndarray, called: np.ndarray) -> dict[str, Any]:
    """Confusion counts and the derived rates of a binary call (NaN when undefined)."""
    tp = int((is_positive & called).sum())
    fn = int((is_positive & ~called).sum())
    tn = int((~is_positive & ~called).sum())
    fp = int((~is_positive & called).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    sensitivity, ppv = ratio(tp, tp + fn), ratio(tp, tp + fp)
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": sensitivity,
        "specificity": ratio(tn, tn + fp),
        "ppv": ppv,
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


def _binary_view(predictions: pd.DataFrame, positive: str) -> tuple[np.ndarray, np.ndarray]:
    return (
        (predictions["label"] == positive).to_numpy(),
        predictions[f"p_{positive}"].to_numpy(dtype=float),
    )


def _check_positive(positive: str, class_names: list[str]) -> None:
    if positive not in class_names:
        raise ValueError(
            f"reporting.positive_class={positive!r} is not a class of the model "
            f"({', '.join(class_names)}): set it to one of them"
        )


# ------------------------------------------------------------------------------ nodes
def choose_operating_point(
    val_predictions: pd.DataFrame, metadata: dict[str, Any], params: dict
) -> dict[str, Any]:
    """Choose the threshold on the positive class's probability, on the validation split.

    ``reporting.threshold`` is either a target sensitivity in (0, 1]: the highest threshold
    whose validation sensitivity reaches it (so specificity is as high as it can be), or
    ``youden``: the threshold maximising sensitivity + specificity - 1 (ties: the higher).

    Returns:
        ``{"positive_class", "rule", "threshold", "val_sensitivity", "val_specificity", "n_val"}``.

    Raises:
        ValueError: The positive class is unknown, ``reporting.threshold`` is invalid, or the
            validation split has no image of the positive class or none of the others.
    """
    positive = params["positive_class"]
    _check_positive(positive, metadata["class_names"])
    rule = params["threshold"]
    is_pos, score = _binary_view(val_predictions, positive)
    if is_pos.all() or not is_pos.any():
        raise ValueError(
            f"the validation split needs images of {positive!r} and of the other classes to "
            f"choose reporting.threshold; it has {int(is_pos.sum())} of {len(is_pos)}"
        )
    if rule == "youden":
        candidates = np.unique(score)[::-1]
        youden = [
            (score[is_pos] >= t).mean() + (score[~is_pos] < t).mean() - 1.0 for t in candidates
        ]
        threshold = float(candidates[int(np.argmax(youden))])
        rule_text = "youden"
    elif isinstance(rule, int | float) and not isinstance(rule, bool) and 0 < rule <= 1:
        ranked = np.sort(score[is_pos])[::-1]
        k = math.ceil(float(rule) * len(ranked) - 1e-9)
        threshold = float(ranked[max(k, 1) - 1])
        rule_text = f"sensitivity>={float(rule):g}"
    else:
        raise ValueError(
            f"reporting.threshold must be a target sensitivity in (0, 1] such as 0.95, or "
            f"'youden'; got {rule!r}"
        )
    counts = binary_counts(is_pos, score >= threshold)
    point = {
        "positive_class": positive,
        "rule": rule_text,
        "threshold": threshold,
        "val_sensitivity": counts["sensitivity"],
        "val_specificity": counts["specificity"],
        "n_val": len(is_pos),
    }
    logger.info(
        "Operating point (%s, validation): p(%s) >= %.4f, sensitivity %.3f, specificity %.3f",
        rule_text,
        positive,
        threshold,
        counts["sensitivity"],
        counts["specificity"],
    )
    return point


def compute_metrics(
    predictions: pd.DataFrame,
    metadata: dict[str, Any],
    operating_point: dict[str, Any],
    params: dict,
) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame]:
    """Test metrics: discrimination with a bootstrap interval, the operating point, calibration.

    Returns:
        ``(metrics, mlflow_metrics, calibration)``: the DVC metrics file content, the numeric
        figures in kedro-mlflow's format (``test.<name>``) and the reliability bins of the
        positive class's probability.

    Raises:
        ValueError: ``reporting.positive_class`` is not one of the model's classes.
    """
    class_names = metadata["class_names"]
    positive = params["positive_class"]
    _check_positive(positive, class_names)
    y = predictions["label"].map(class_names.index).to_numpy()
    proba = predictions[[f"p_{c}" for c in class_names]].to_numpy(dtype=float)
    pos = class_names.index(positive)
    is_pos, score = _binary_view(predictions, positive)
    argmax = proba.argmax(axis=1)
    per_class = per_class_auroc(y, proba)
    boot = params["bootstrap"]
    intervals = bootstrap_auroc(
        y, proba, pos, boot["n_resamples"], boot["confidence"], boot["seed"]
    )
    recalls = [
        float(np.mean(argmax[y == k] == k)) for k in range(len(class_names)) if (y == k).any()
    ]
    threshold = float(operating_point["threshold"])
    at_threshold = binary_counts(is_pos, score >= threshold)
    bins = calibration_bins(is_pos, score, params["calibration_bins"])
    top_bins = calibration_bins(argmax == y, proba.max(axis=1), params["calibration_bins"])
    from sklearn.metrics import average_precision_score

    metrics = {
        "n_test": len(predictions),
        "backbone": metadata["backbone"],
        "positive_class": positive,
        "accuracy": float(np.mean(y == argmax)),
        "balanced_accuracy": float(np.mean(recalls)),
        "auroc": summary_auroc(y, proba),
        "auroc_ci_low": intervals["auroc"][0],
        "auroc_ci_high": intervals["auroc"][1],
        "auroc_positive": float(per_class[pos]),
        "auroc_positive_ci_low": intervals["auroc_positive"][0],
        "auroc_positive_ci_high": intervals["auroc_positive"][1],
        "average_precision_positive": (
            float(average_precision_score(is_pos, score)) if is_pos.any() else float("nan")
        ),
        "auroc_per_class": {c: float(v) for c, v in zip(class_names, per_class, strict=True)},
        "ci_confidence": float(boot["confidence"]),
        "bootstrap_resamples": int(boot["n_resamples"]),
        "threshold": threshold,
        "threshold_rule": operating_point["rule"],
        **at_threshold,
        "ece_positive": expected_calibration_error(bins),
        "ece_top_label": expected_calibration_error(top_bins),
    }
    logger.info(
        "Test: AUROC %.3f [%.3f, %.3f], at p(%s) >= %.3f sensitivity %.3f, specificity %.3f",
        metrics["auroc"],
        metrics["auroc_ci_low"],
        metrics["auroc_ci_high"],
        positive,
        threshold,
        metrics["sensitivity"],
        metrics["specificity"],
    )
    numeric = {
        k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    numeric.update({f"auroc_{c}": v for c, v in metrics["auroc_per_class"].items()})
    mlflow_metrics = {
        f"test.{k}": {"value": float(v), "step": 0}
        for k, v in numeric.items()
        if not math.isnan(float(v))
    }
    return _json_safe(metrics), mlflow_metrics, bins


def _json_safe(value: Any) -> Any:
    """NaN becomes None so that the file is strict JSON (``dvc metrics show`` reads it)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def curve_tables(
    predictions: pd.DataFrame, metadata: dict[str, Any], params: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC and precision-recall points of the positive class vs the rest (for ``dvc plots``).

    Returns:
        ``(roc, pr)``: columns ``fpr``, ``tpr``, ``threshold`` and ``recall``, ``precision``,
        ``threshold``.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    _check_positive(params["positive_class"], metadata["class_names"])
    is_pos, score = _binary_view(predictions, params["positive_class"])
    fpr, tpr, roc_thr = roc_curve(is_pos, score)
    precision, recall, pr_thr = precision_recall_curve(is_pos, score)
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(roc_thr, 1.0)})
    pr = pd.DataFrame(
        {"recall": recall, "precision": precision, "threshold": np.append(pr_thr, 1.0)}
    )
    return roc, pr


def learning_curve_table(history: dict[str, dict[str, list]]) -> pd.DataFrame:
    """The finetune history as one row per epoch (both phases, continuous epoch numbers).

    Returns:
        Columns ``epoch``, ``phase`` and every metric the history holds (``loss``,
        ``val_loss``, ``auc``, ``val_auc``, ...).
    """
    frames = []
    for phase, values in history.items():
        if not isinstance(values, dict) or not values.get("epoch"):
            continue
        columns = {
            k: v
            for k, v in values.items()
            if isinstance(v, list) and len(v) == len(values["epoch"])
        }
        frame = pd.DataFrame(columns)
        frame.insert(1, "phase", phase)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["epoch", "phase"])
    table = pd.concat(frames, ignore_index=True)
    return table[["epoch", "phase", *[c for c in table.columns if c not in ("epoch", "phase")]]]


def package_model(
    classifier: Any, metadata: dict[str, Any], operating_point: dict[str, Any]
) -> tuple[Any, Any]:
    """Bundle the classifier with its decoding settings and operating point for serving.

    Returns:
        ``(serving_model, classifier)``: the :class:`~breast_cancer_pipeline.serving.ServingModel`
        and the classifier again, for the TF Serving export.
    """
    from breast_cancer_pipeline.serving import ServingModel

    config = {
        "class_names": metadata["class_names"],
        "image_size": metadata["image_size"],
        "channels": metadata["channels"],
        "color_mode": metadata["color_mode"],
        "positive_class": operating_point["positive_class"],
        "threshold": operating_point["threshold"],
        "threshold_rule": operating_point["rule"],
        "backbone": metadata["backbone"],
    }
    return ServingModel(classifier, config), classifier
