"""Reporting: the test metrics with their intervals, the curve tables, the packaged model.

The binary view is "``reporting.positive_class`` vs the rest": its probability is the score,
and the threshold on it (:mod:`.fits.operating_point`) is applied unchanged to the test split.
Every metric comes from :mod:`breast_cancer_pipeline.metrics`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation.levels import image_groups
from breast_cancer_pipeline.evaluation.predictions import as_arrays, binary_view
from breast_cancer_pipeline.geometry import Geometry
from breast_cancer_pipeline.serving.packaging import served_tiles

from .parameters import check_positive_class

logger = logging.getLogger(__name__)


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


def _test_tracked(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The numeric, finite metrics as ``test.<name>`` entries (per class: ``test.auroc_<c>``)."""
    per_class = {f"auroc_{c}": v for c, v in metrics["auroc_per_class"].items()}
    tracked = m.tracked_metrics("test", {**metrics, **per_class})
    for block in ("calibration", "tta", "conformal"):  # test.<block>.<name>
        tracked |= m.tracked_metrics(f"test.{block}", metrics.get(block) or {})
    return tracked


def _test_figures(
    predictions: pd.DataFrame,
    metadata: dict[str, Any],
    operating_point: dict,
    params: dict,
    groups: np.ndarray | None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The test split's figures (discrimination, the threshold's, calibration) and its bins."""
    class_names, positive = metadata["class_names"], params["positive_class"]
    y, proba = as_arrays(predictions, class_names)
    pos = class_names.index(positive)
    threshold, boot = float(operating_point["threshold"]), params["bootstrap"]
    ci = m.summary_intervals(y, proba, pos, **boot, groups=groups)
    calibration, bins = m.calibration_summary(y, proba, pos, params["calibration_bins"])
    figures = {
        "n_test": len(predictions),
        "backbone": metadata["backbone"],
        "positive_class": positive,
        **_discrimination(y, proba, pos, class_names, ci),
        "ci_confidence": float(boot["confidence"]),
        "bootstrap_resamples": int(boot["n_resamples"]),
        "bootstrap": m.bootstrap_kind(groups),
        "n_test_patients": int(len(set(groups))) if groups is not None else len(predictions),
        "threshold": threshold,
        "threshold_rule": operating_point["rule"],
        **m.binary_counts(y == pos, proba[:, pos] >= threshold),
        **calibration,
        "brier_score_ci_low": ci["brier_score_ci_low"],
        "brier_score_ci_high": ci["brier_score_ci_high"],
    }
    return figures, bins


def _log_test(metrics: dict[str, Any]) -> None:
    logger.info(
        "Test: AUROC %.3f [%.3f, %.3f], at p(%s) >= %.3f sensitivity %.3f, specificity %.3f; "
        "Brier %.3f, log loss %.3f",
        metrics["auroc"],
        metrics["auroc_ci_low"],
        metrics["auroc_ci_high"],
        metrics["positive_class"],
        metrics["threshold"],
        metrics["sensitivity"],
        metrics["specificity"],
        metrics["brier_score"],
        metrics["log_loss"],
    )


def compute_metrics(
    predictions: pd.DataFrame,
    metadata: dict[str, Any],
    operating_point: dict[str, Any],
    params: dict,
    external: dict[str, Any] | None = None,
    calibration_report: dict[str, Any] | None = None,
    ood: dict[str, Any] | None = None,
    export: dict[str, Any] | None = None,
    cv: dict[str, Any] | None = None,
    *,
    keys: pd.DataFrame | None = None,
    levels: dict[str, Any] | None = None,
    subgroups: dict[str, Any] | None = None,
    decision_curve: dict[str, Any] | None = None,
    explanation: dict[str, Any] | None = None,
    tiles: dict[str, Any] | None = None,
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
        export: The exported files and their parity with Keras
            (:func:`.export.export_served_model`), the ``export`` block (``{}`` without).
        cv: With cross-validation (``evaluation.folds`` >= 2), the ``cv`` block
            (:func:`.cross_validation.cross_validation_summary`); ``None`` with one split.
        keys: :func:`.levels.evaluation_keys`'s table: its patients make every bootstrap
            resample patients when one has several images (``bootstrap``: ``cluster``);
            none: images are resampled alone.
        levels: The ``levels`` block (:func:`.levels.level_metrics`).
        subgroups: The ``subgroups`` block (:func:`.subgroups.subgroup_metrics`).
        decision_curve: The ``decision_curve`` block (:func:`.net_benefit.decision_curves`).
        explanation: The ``explanation`` block (:func:`.explanation.explanation_metrics`):
            Grad-CAM against the lesion masks.
        tiles: The ``tiles`` block of a network trained on tiles (:func:`.tiles.tile_metrics`);
            left out when empty.

    Returns:
        ``(metrics, mlflow_metrics, calibration)``: the DVC metrics file content, the numeric
        figures in kedro-mlflow's format (``test.<name>``, ``external.<name>``) and the
        reliability bins of the positive class's probability.

    Raises:
        ValueError: ``reporting.positive_class`` is not one of the model's classes.
    """
    check_positive_class(params["positive_class"], metadata["class_names"])
    groups = image_groups(predictions, keys)
    metrics, bins = _test_figures(predictions, metadata, operating_point, params, groups)
    metrics.update(calibration_report or {})
    if ood is not None:
        metrics["ood"] = ood
    _log_test(metrics)
    metrics["external"] = external or None
    if export is not None:
        metrics["export"] = export
    if cv is not None:
        metrics["cv"] = cv
    for name, block in (
        ("levels", levels),
        ("subgroups", subgroups),
        ("decision_curve", decision_curve),
        ("explanation", explanation),
        ("tiles", tiles or None),
    ):
        if block is not None:
            metrics[name] = block
    tracked = _test_tracked(metrics) | m.tracked_metrics("external", external or {})
    tracked |= m.tracked_metrics("test.explanation", explanation or {})
    for kind, block in (export or {}).items():  # export.onnx.max_abs_diff...
        tracked |= m.tracked_metrics(f"export.{kind}", block)
    return m.json_safe(metrics), tracked, bins


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
    check_positive_class(params["positive_class"], metadata["class_names"])
    return m.roc_pr_curves(*binary_view(predictions, params["positive_class"]))


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


def serving_settings(
    probability_settings: dict[str, Any], level_operating_points: dict[str, Any]
) -> dict[str, Any]:
    """What the served model carries beside its threshold, with the levels' operating points.

    Args:
        probability_settings: Test-time views, temperature and conformal threshold
            (:func:`.fits.conformal.serving_calibration`).
        level_operating_points: Each level's key columns and threshold, with the aggregation
            and positive class (see :mod:`breast_cancer_pipeline.serving.levels`).

    Returns:
        ``probability_settings`` with ``levels``: the served model answers every level whose
        columns a request carries.

    Raises:
        ValueError: The levels' operating points are malformed.
    """
    from breast_cancer_pipeline.serving.levels import check_levels

    levels = check_levels(level_operating_points, level_operating_points.get("positive_class"))
    return {**probability_settings, "levels": levels}


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
            (:func:`.fits.conformal.serving_calibration`), with ``evaluation.levels`` the
            levels' operating points too (:func:`serving_settings`); none: one view,
            ``T = 1``, no sets, no levels.
        ood: The fitted out-of-distribution score (:func:`.fits.ood.fit_ood_score`), shipped with
            the model (``ood.npz``); none: rows get no score.
        *members: The other fold models of the ensemble, whose probabilities are averaged.

    With ``tiles`` in the metadata, the configuration carries it (:func:`served_tiles`): the
    network's input is then the tile.

    Returns:
        ``(packaged_model, classifier)``: the
        :class:`~breast_cancer_pipeline.serving.ServingModel` (its ONNX and LiteRT files are
        added by :func:`.export.export_served_model`) and the classifier again, for the TF
        Serving export.
    """
    from breast_cancer_pipeline.serving import ServingModel

    config = {
        "class_names": metadata["class_names"],
        # The input geometry; a model trained before resize existed was stretched.
        **Geometry.from_config(metadata).config(),
        "channels": metadata["channels"],
        "color_mode": metadata["color_mode"],
        "positive_class": operating_point["positive_class"],
        "threshold": operating_point["threshold"],
        "threshold_rule": operating_point["rule"],
        "backbone": metadata["backbone"],
        **(probability_settings or {}),
        **served_tiles(metadata),
    }
    if members:
        config["ensemble_members"] = 1 + len(members)
    return ServingModel(classifier, config, members, ood=ood), classifier


def attach_attention_head(packaged_model: Any, attention_head: Any) -> Any:
    """The packaged tile model carrying the attention head that combines an image's tiles.

    Args:
        packaged_model: The :class:`~breast_cancer_pipeline.serving.ServingModel` of
            :func:`package_model`, trained on tiles with ``aggregation: attention``.
        attention_head: The head fitted after the tile classifier (``attention_head``).

    Returns:
        The model with the head (saved beside it, named in ``tiles.attention_head``).

    Raises:
        ValueError: The model is not a tile model combined by ``attention``.
    """
    return packaged_model.with_attention_head(attention_head)
