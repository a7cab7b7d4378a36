"""Reporting: validation-chosen operating point, test metrics with intervals, packaged model.

The binary view is "``reporting.positive_class`` vs the rest": its probability is the score,
and the threshold on it is chosen on the validation split (``reporting.threshold``: a target
sensitivity such as 0.95, or ``youden``), then applied unchanged to the test split. Every metric
comes from :mod:`breast_cancer_pipeline.metrics`; parameter values are checked beforehand by
:mod:`.parameters`, so the nodes check only what needs the data.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline import metrics as m

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ predictions
def prediction_frame(model_input: dict, split: str, proba: np.ndarray) -> pd.DataFrame:
    """The predictions table of one split from its class probabilities.

    Args:
        model_input: The model-input arrays (``paths_<split>``, ``y_<split>``, class names).
        split: ``val`` or ``test``.
        proba: ``(N, k)`` class probabilities of the split's images, in order.

    Returns:
        One row per image: ``path``, ``label``, ``predicted`` (argmax) and ``p_<class>``.
    """
    class_names = [str(c) for c in model_input["class_names"]]
    proba = np.asarray(proba)
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


def classifier_predictions(
    classifier: Any, model_input: dict, split: str, batch_size: int
) -> pd.DataFrame:
    """The bare classifier's predictions of one split: one view, no temperature.

    For the fold models of cross-validation, whose held-out predictions are what the
    ensemble's temperature and threshold are fitted on (the served path is
    :func:`.calibration.predict_split`).

    Returns:
        The columns of :func:`prediction_frame`.
    """
    images = np.asarray(model_input[f"x_{split}"])
    proba = classifier.predict(images, batch_size=batch_size, verbose=0)
    return prediction_frame(model_input, split, proba)


# ------------------------------------------------------------------------------ helpers
def _binary_view(predictions: pd.DataFrame, positive: str) -> tuple[np.ndarray, np.ndarray]:
    return (
        (predictions["label"] == positive).to_numpy(),
        predictions[f"p_{positive}"].to_numpy(dtype=float),
    )


def _encoded(predictions: pd.DataFrame, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels and the ``(n, k)`` probabilities, columns in the model's class order."""
    y = predictions["label"].map(class_names.index).to_numpy()
    return y, predictions[[f"p_{c}" for c in class_names]].to_numpy(dtype=float)


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
    See :func:`~breast_cancer_pipeline.metrics.sensitivity_threshold` and
    :func:`~breast_cancer_pipeline.metrics.youden_threshold`.

    Returns:
        ``{"positive_class", "rule", "threshold", "val_sensitivity", "val_specificity", "n_val"}``.

    Raises:
        ValueError: The positive class is unknown, or the validation split has no image of the
            positive class or none of the others.
    """
    positive, rule = params["positive_class"], params["threshold"]
    _check_positive(positive, metadata["class_names"])
    is_pos, score = _binary_view(val_predictions, positive)
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


def _intervals(y: np.ndarray, proba: np.ndarray, pos: int, boot: dict) -> dict[str, float]:
    """Stratified bootstrap intervals, as ``<metric>_ci_low`` / ``<metric>_ci_high`` keys."""

    def statistic(y_: np.ndarray, proba_: np.ndarray) -> dict[str, float]:
        per_class = m.per_class_auroc(y_, proba_)
        return {
            "auroc": m.summary_auroc(per_class),
            "auroc_positive": float(per_class[pos]),
            "brier_score": m.brier_score(y_, proba_),
        }

    found = m.bootstrap_intervals(
        y, proba, statistic, boot["n_resamples"], boot["confidence"], boot["seed"]
    )
    keys = {}
    for name, (low, high) in found.items():
        keys[f"{name}_ci_low"], keys[f"{name}_ci_high"] = low, high
    return keys


def _discrimination(
    y: np.ndarray, proba: np.ndarray, pos: int, class_names: list[str], ci: dict[str, float]
) -> dict[str, Any]:
    """Accuracy, AUROC (summary, positive class, per class) with intervals, average precision."""
    argmax = proba.argmax(axis=1)
    per_class = m.per_class_auroc(y, proba)
    return {
        "accuracy": float(np.mean(y == argmax)),
        "balanced_accuracy": m.balanced_accuracy(y, argmax),
        "auroc": m.auroc(y, proba),
        "auroc_ci_low": ci["auroc_ci_low"],
        "auroc_ci_high": ci["auroc_ci_high"],
        "auroc_positive": float(per_class[pos]),
        "auroc_positive_ci_low": ci["auroc_positive_ci_low"],
        "auroc_positive_ci_high": ci["auroc_positive_ci_high"],
        "average_precision_positive": m.average_precision(y == pos, proba[:, pos]),
        "auroc_per_class": {c: float(v) for c, v in zip(class_names, per_class, strict=True)},
    }


def _calibration(
    y: np.ndarray, proba: np.ndarray, pos: int, n_bins: int
) -> tuple[dict[str, float], pd.DataFrame]:
    """ECE of p(positive) and of the top-label confidence, Brier score, log loss; the bins."""
    argmax = proba.argmax(axis=1)
    bins = m.calibration_bins(y == pos, proba[:, pos], n_bins)
    top_bins = m.calibration_bins(argmax == y, proba.max(axis=1), n_bins)
    values = {
        "ece_positive": m.expected_calibration_error(bins),
        "ece_top_label": m.expected_calibration_error(top_bins),
        "brier_score": m.brier_score(y, proba),
        "log_loss": m.log_loss(y, proba),
    }
    return values, bins


def _tracked(prefix: str, values: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The numeric, defined ``values`` as kedro-mlflow entries ``<prefix>.<name>``."""
    return {
        f"{prefix}.{k}": {"value": float(v), "step": 0}
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(float(v))
    }


def _mlflow_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The numeric, defined metrics as ``test.<name>`` entries (per class: ``test.auroc_<c>``)."""
    per_class = {f"auroc_{c}": v for c, v in metrics["auroc_per_class"].items()}
    tracked = _tracked("test", {**metrics, **per_class})
    for block in ("calibration", "tta", "conformal"):  # test.<block>.<name>
        tracked |= _tracked(f"test.{block}", metrics.get(block) or {})
    return tracked


def compute_metrics(
    predictions: pd.DataFrame,
    metadata: dict[str, Any],
    operating_point: dict[str, Any],
    params: dict,
    external: dict[str, Any] | None = None,
    calibration_report: dict[str, Any] | None = None,
    ood: dict[str, Any] | None = None,
    cv: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame]:
    """Test metrics: discrimination with bootstrap intervals, the operating point, calibration.

    Args:
        predictions: The test predictions (as served: views averaged, recalibrated).
        metadata: The classifier's metadata.
        operating_point: The threshold chosen on the (recalibrated) validation split.
        params: The ``reporting`` parameters.
        external: The external site's block (:func:`.external.external_metrics`); empty or
            ``None`` without one (``external`` is then ``null``).
        calibration_report: The ``calibration``, ``tta`` and ``conformal`` blocks
            (:func:`.calibration.calibration_report`), added to ``metrics.json`` as given.
        ood: The out-of-distribution check (:func:`.ood.ood_summary`), the ``ood`` block.
        cv: With cross-validation (``evaluation.folds`` >= 2), the ``cv`` block
            (:func:`.cross_validation.cross_validation_summary`); ``None`` with one split.

    Returns:
        ``(metrics, mlflow_metrics, calibration)``: the DVC metrics file content, the numeric
        figures in kedro-mlflow's format (``test.<name>``, ``external.<name>``) and the
        reliability bins of the positive class's probability.

    Raises:
        ValueError: ``reporting.positive_class`` is not one of the model's classes.
    """
    class_names, positive = metadata["class_names"], params["positive_class"]
    _check_positive(positive, class_names)
    y, proba = _encoded(predictions, class_names)
    pos = class_names.index(positive)
    threshold, boot = float(operating_point["threshold"]), params["bootstrap"]
    ci = _intervals(y, proba, pos, boot)
    calibration, bins = _calibration(y, proba, pos, params["calibration_bins"])
    metrics = {
        "n_test": len(predictions),
        "backbone": metadata["backbone"],
        "positive_class": positive,
        **_discrimination(y, proba, pos, class_names, ci),
        "ci_confidence": float(boot["confidence"]),
        "bootstrap_resamples": int(boot["n_resamples"]),
        "threshold": threshold,
        "threshold_rule": operating_point["rule"],
        **m.binary_counts(y == pos, proba[:, pos] >= threshold),
        **calibration,
        "brier_score_ci_low": ci["brier_score_ci_low"],
        "brier_score_ci_high": ci["brier_score_ci_high"],
        **(calibration_report or {}),
    }
    if ood is not None:
        metrics["ood"] = ood
    logger.info(
        "Test: AUROC %.3f [%.3f, %.3f], at p(%s) >= %.3f sensitivity %.3f, specificity %.3f; "
        "Brier %.3f, log loss %.3f",
        metrics["auroc"],
        metrics["auroc_ci_low"],
        metrics["auroc_ci_high"],
        positive,
        threshold,
        metrics["sensitivity"],
        metrics["specificity"],
        metrics["brier_score"],
        metrics["log_loss"],
    )
    metrics["external"] = external or None
    if cv is not None:
        metrics["cv"] = cv
    tracked = _mlflow_metrics(metrics) | _tracked("external", external or {})
    return _json_safe(metrics), tracked, bins


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
        ``threshold`` (:func:`~breast_cancer_pipeline.metrics.roc_pr_curves`).

    Raises:
        ValueError: ``reporting.positive_class`` is not one of the model's classes.
    """
    _check_positive(params["positive_class"], metadata["class_names"])
    return m.roc_pr_curves(*_binary_view(predictions, params["positive_class"]))


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
    classifier: Any,
    metadata: dict[str, Any],
    operating_point: dict[str, Any],
    probability_settings: dict[str, Any] | None = None,
    ood: Any = None,
    *members: Any,
) -> tuple[Any, Any]:
    """Bundle the classifier with its decoding settings and operating point for serving.

    Args:
        classifier: The trained Keras classifier (with ``evaluation.ensemble``, the first
            fold model).
        metadata: Its metadata (classes, image size, colour mode, backbone).
        operating_point: The threshold chosen on the validation split (with the ensemble, on
            the out-of-fold predictions).
        probability_settings: Test-time views, temperature and conformal threshold
            (:func:`.calibration.serving_calibration`); none: one view, ``T = 1``, no sets.
        ood: The fitted out-of-distribution score (:func:`.ood.fit_ood_score`), shipped with
            the model (``ood.npz``); none: rows get no score.
        *members: The other fold models of the ensemble, whose probabilities are averaged.

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
        **(probability_settings or {}),
    }
    if members:
        config["ensemble_members"] = 1 + len(members)
    return ServingModel(classifier, config, members, ood=ood), classifier
