"""Reporting nodes of what the served model does to its probabilities.

Reporting predicts through :class:`~breast_cancer_pipeline.serving.ServingModel`, the path the
served model and the batch command take, so the figures of the report are those of the
served probabilities:

1. :func:`predict_val_split`: the validation split through an *uncalibrated* serving model
   (test-time views of ``evaluation.tta`` averaged, ``T = 1``);
2. :func:`fit_calibration`: the temperature and floor (``evaluation.calibration``) fitted
   on them, and
   the calibrated validation predictions the operating threshold is then chosen on;
3. :func:`serving_calibration`: the conformal threshold (``inference.serving.conformal``)
   calibrated on the calibrated validation predictions, and the settings ``package_model``
   writes into ``serving.json``;
4. :func:`predict_test_split`: the test split through the packaged model (as loaded back
   from ``serving_model``), before and after the temperature, and without test-time views;
5. :func:`calibration_report`: the ``calibration``, ``tta`` and ``conformal`` blocks of
   ``metrics.json`` (ECE and Brier score before and after, AUROC with and without the views,
   conformal coverage and set size, all on test with bootstrap intervals).

:func:`calibration_context` is what the report's section (``templates/_calibration.*.j2``)
shows.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation import calibration as cal
from breast_cancer_pipeline.evaluation import conformal
from breast_cancer_pipeline.evaluation.tta import mode_of
from breast_cancer_pipeline.progress import Progress
from breast_cancer_pipeline.templating import fmt

from .nodes import _calibration, _check_positive, _encoded, package_model, prediction_frame

logger = logging.getLogger(__name__)

#: The threshold of the uncalibrated validation model: ``predict_proba`` never reads it.
_NOT_CHOSEN = {"threshold": 0.5, "rule": "not chosen yet (validation predictions)"}


def tta_settings(evaluation: dict) -> dict[str, Any]:
    """The ``tta`` key of ``serving.json`` from the ``evaluation`` parameters."""
    mode = mode_of(evaluation["tta"])
    return {
        "mode": mode,
        "passes": int(evaluation["tta_passes"]) if mode != "off" else 1,
        "shift": float(evaluation["tta_shift"]),
    }


def _predict(serving_model: Any, images: np.ndarray, batch_size: int, split: str) -> np.ndarray:
    """:meth:`ServingModel.averaged_proba` of ``images``, ``batch_size`` at a time."""
    progress = Progress(len(images), f"Predicting the {split} split", logger, unit="images")
    parts = []
    for start in range(0, len(images), batch_size):
        parts.append(serving_model.averaged_proba(images[start : start + batch_size]))
        progress.advance(len(parts[-1]))
    progress.finish()
    if not parts:
        return np.empty((0, len(serving_model.class_names)), dtype=np.float32)
    return np.concatenate(parts)


def predict_val_split(
    classifier: Any,
    model_input: dict[str, np.ndarray],
    metadata: dict[str, Any],
    reporting: dict,
    evaluation: dict,
) -> pd.DataFrame:
    """Validation probabilities of the serving model before recalibration.

    Returns:
        One row per image: ``path``, ``label``, ``predicted``, ``p_<class>`` (views averaged,
        ``T = 1``).

    Raises:
        ValueError: ``reporting.positive_class`` is not one of the model's classes.
    """
    _check_positive(reporting["positive_class"], metadata["class_names"])
    point = {**_NOT_CHOSEN, "positive_class": reporting["positive_class"]}
    uncalibrated, _ = package_model(classifier, metadata, point, {"tta": tta_settings(evaluation)})
    images = np.asarray(model_input["x_val"])
    proba = _predict(uncalibrated, images, reporting["batch_size"], "val")
    return prediction_frame(model_input, "val", proba)


def _with_proba(frame: pd.DataFrame, proba: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    out = frame.copy()
    out["predicted"] = [class_names[i] for i in np.asarray(proba).argmax(axis=1)]
    for i, name in enumerate(class_names):
        out[f"p_{name}"] = np.asarray(proba)[:, i].astype(float)
    return out


def held_out_source(evaluation: dict) -> str:
    """What the temperature, threshold and conformal sets are fitted on.

    ``out-of-fold`` when the fold ensemble is served (``evaluation.ensemble``): every
    development image, each predicted by the fold model that never saw it. Otherwise
    ``validation``: the images that also chose the training checkpoint (best validation
    AUROC). The parameters' schema already
    refuses ``ensemble`` with fewer than 2 folds, and the pipeline wires the out-of-fold
    predictions on the same flag.
    """
    return "out-of-fold" if evaluation["ensemble"] else "validation"


def fit_calibration(
    val_predictions: pd.DataFrame, metadata: dict[str, Any], evaluation: dict, reporting: dict
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fit the temperature on the validation predictions; recalibrate them.

    Args:
        val_predictions: :func:`predict_val_split`'s table (before recalibration).
        metadata: The classifier's metadata (class names).
        evaluation: The ``evaluation`` parameters (``calibration``).
        reporting: The ``reporting`` parameters (``bootstrap``: the temperature's interval).

    Returns:
        ``(calibration, calibrated)``: the fitted temperature
        (:func:`breast_cancer_pipeline.evaluation.calibration.fit_calibration`) and the
        validation table with recalibrated probabilities (the operating
        threshold and the conformal sets are chosen on it).
    """
    names = metadata["class_names"]
    y, proba = _encoded(val_predictions, names)
    fitted = {
        **cal.fit_calibration(proba, y, evaluation["calibration"], reporting["bootstrap"]),
        "fitted_on": held_out_source(evaluation),
    }
    logger.info(
        "Calibration (%s, %s, n=%d): T = %.3f (%.3f-%.3f), floor %.3f (%.3f-%.3f), "
        "NLL %.4f -> %.4f",
        fitted["method"],
        fitted["fitted_on"],
        fitted["n_val"],
        fitted["temperature"],
        fitted["temperature_ci_low"],
        fitted["temperature_ci_high"],
        fitted["floor"],
        fitted["floor_ci_low"],
        fitted["floor_ci_high"],
        fitted["val_nll_before"],
        fitted["val_nll_after"],
    )
    calibrated = cal.apply_calibration(proba, fitted["temperature"], fitted["floor"])
    return fitted, _with_proba(val_predictions, calibrated, names)


def serving_calibration(
    calibration: dict[str, Any],
    val_predictions: pd.DataFrame,
    metadata: dict[str, Any],
    evaluation: dict,
    inference: dict,
) -> dict[str, Any]:
    """The probability settings of ``serving.json``: views, temperature, conformal threshold.

    Args:
        calibration: :func:`fit_calibration`'s result.
        val_predictions: The recalibrated validation predictions.
        metadata: The classifier's metadata (class names).
        evaluation: The ``evaluation`` parameters.
        inference: The ``inference`` parameters (``serving.conformal.alpha``).

    Returns:
        ``{"tta", "temperature", "calibration_floor", "conformal"}`` (see
        :data:`~breast_cancer_pipeline.serving.PROBABILITY_DEFAULTS`).
    """
    y, proba = _encoded(val_predictions, metadata["class_names"])
    found = conformal.calibrate(proba, y, float(inference["serving"]["conformal"]["alpha"]))
    logger.info(
        "Conformal sets (LAC, alpha %.2f, validation n=%d): classes with p >= %.4f",
        found["alpha"],
        found["n_calibration"],
        found["threshold"],
    )
    return {
        "tta": tta_settings(evaluation),
        "temperature": float(calibration["temperature"]),
        "calibration_floor": float(calibration.get("floor", 0.0)),
        "conformal": found,
    }


def predict_split(
    serving_model: Any, model_input: dict[str, np.ndarray], split: str, batch_size: int
) -> pd.DataFrame:
    """A split's predictions as served (:meth:`ServingModel.predict_proba`), for any split.

    Returns:
        One row per image: ``path``, ``label``, ``predicted``, ``p_<class>``.
    """
    images = np.asarray(model_input[f"x_{split}"])
    proba = serving_model.calibrate(_predict(serving_model, images, batch_size, split))
    return prediction_frame(model_input, split, proba)


def predict_test_split(
    serving_model: Any, model_input: dict[str, np.ndarray], reporting: dict
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Test probabilities of the packaged model, as served, and the two it is compared with.

    Returns:
        ``(served, uncalibrated, without_tta)``: tables like :func:`predict_val_split`'s;
        ``served`` holds :meth:`ServingModel.predict_proba`'s probabilities (views averaged,
        then the temperature and floor), ``uncalibrated`` the same before them,
        ``without_tta`` the original image alone, recalibrated the same way (the same
        forward passes as ``served`` when ``tta`` is off).
    """
    images = np.asarray(model_input["x_test"])
    raw = _predict(serving_model, images, reporting["batch_size"], "test")
    if serving_model.config["tta"]["mode"] == "off":
        single = raw
    else:
        plain = serving_model.with_config(tta={"mode": "off"})
        single = _predict(plain, images, reporting["batch_size"], "test (no test-time views)")
    return (
        prediction_frame(model_input, "test", serving_model.calibrate(raw)),
        prediction_frame(model_input, "test", raw),
        prediction_frame(model_input, "test", serving_model.calibrate(single)),
    )


def _ci_keys(found: dict[str, tuple[float, float]], suffix: str = "") -> dict[str, float]:
    keys = {}
    for name, (low, high) in found.items():
        keys[f"{name}{suffix}_ci_low"], keys[f"{name}{suffix}_ci_high"] = low, high
    return keys


def _boot(y: np.ndarray, proba: np.ndarray, statistic: Any, boot: dict) -> dict:
    return m.bootstrap_intervals(
        y, proba, statistic, boot["n_resamples"], boot["confidence"], boot["seed"]
    )


def _calibration_block(
    before: pd.DataFrame, after: pd.DataFrame, fitted: dict, names: list[str], params: dict
) -> dict[str, Any]:
    """ECE (positive class, top label), Brier score and log loss before and after, with CIs."""
    pos, n_bins = names.index(params["positive_class"]), params["calibration_bins"]

    def statistic(y_: np.ndarray, proba_: np.ndarray) -> dict[str, float]:
        return {
            "ece_positive": m.binned_ece(y_ == pos, proba_[:, pos], n_bins),
            "ece_top_label": m.binned_ece(proba_.argmax(axis=1) == y_, proba_.max(axis=1), n_bins),
            "brier_score": m.brier_score(y_, proba_),
        }

    block = {k: fitted[k] for k in ("method", "temperature", "n_val")}
    for bound in ("temperature_ci_low", "temperature_ci_high"):  # absent: fitted before them
        block[bound] = fitted.get(bound, float("nan"))
    block["floor"] = fitted.get("floor", 0.0)  # absent: fitted before the floor existed
    for bound in ("floor_ci_low", "floor_ci_high"):
        block[bound] = fitted.get(bound, 0.0)
    block["fitted_on"] = fitted.get("fitted_on", "validation")
    block.update({k: fitted[k] for k in ("val_nll_before", "val_nll_after")})
    for suffix, frame in (("_before", before), ("_after", after)):
        y, proba = _encoded(frame, names)
        values, _ = _calibration(y, proba, pos, n_bins)
        block.update({f"{k}{suffix}": v for k, v in values.items()})
        for name, (low, high) in _boot(y, proba, statistic, params["bootstrap"]).items():
            block[f"{name}{suffix}_ci_low"], block[f"{name}{suffix}_ci_high"] = low, high
    return block


def _tta_block(
    with_tta: pd.DataFrame, without: pd.DataFrame, tta: dict, names: list[str], params: dict
) -> dict[str, Any]:
    """Test AUROC with and without the test-time views (both recalibrated), with CIs."""

    def statistic(y_: np.ndarray, proba_: np.ndarray) -> dict[str, float]:
        return {"auroc": m.auroc(y_, proba_)}

    block: dict[str, Any] = {"mode": tta["mode"], "passes": tta["passes"], "shift": tta["shift"]}
    y, plain_proba = _encoded(without, names)
    augmented_proba = _encoded(with_tta, names)[1]

    def auroc_ci(proba: np.ndarray) -> tuple[float, float, float]:
        return (m.auroc(y, proba), *_boot(y, proba, statistic, params["bootstrap"])["auroc"])

    plain = auroc_ci(plain_proba)
    # tta off: the same probabilities twice, one bootstrap (each costs seconds).
    same = np.array_equal(plain_proba, augmented_proba)
    augmented = plain if same else auroc_ci(augmented_proba)
    for suffix, values in (("_without_tta", plain), ("_with_tta", augmented)):
        keys = (f"auroc{suffix}", f"auroc{suffix}_ci_low", f"auroc{suffix}_ci_high")
        block.update(zip(keys, values, strict=True))
    block["auroc_gain"] = block["auroc_with_tta"] - block["auroc_without_tta"]
    return block


def _conformal_block(
    served: pd.DataFrame, found: dict, names: list[str], params: dict
) -> dict[str, Any]:
    """Empirical test coverage and mean set size of the conformal sets, with CIs."""
    y, proba = _encoded(served, names)
    threshold = found["threshold"]

    def statistic(y_: np.ndarray, proba_: np.ndarray) -> dict[str, float]:
        return conformal.coverage(proba_, y_, threshold)

    sizes = conformal.prediction_sets(proba, threshold).sum(axis=1)
    return {
        **found,
        "target_coverage": 1.0 - found["alpha"],
        "n_test": len(y),
        **conformal.coverage(proba, y, threshold),
        **_ci_keys(_boot(y, proba, statistic, params["bootstrap"])),
        "set_sizes": {str(k): int((sizes == k).sum()) for k in range(1, len(names) + 1)},
    }


def calibration_report(
    test_predictions: pd.DataFrame,
    test_uncalibrated: pd.DataFrame,
    test_without_tta: pd.DataFrame,
    calibration: dict[str, Any],
    settings: dict[str, Any],
    metadata: dict[str, Any],
    params: dict,
) -> dict[str, Any]:
    """The ``calibration``, ``tta`` and ``conformal`` blocks of ``metrics.json`` (test split).

    Args:
        test_predictions: The served (views averaged, recalibrated) test predictions.
        test_uncalibrated: The same before the temperature.
        test_without_tta: The original images alone, recalibrated.
        calibration: :func:`fit_calibration`'s result.
        settings: :func:`serving_calibration`'s result (``tta``, ``conformal``).
        metadata: The classifier's metadata (class names).
        params: The ``reporting`` parameters (positive class, bins, bootstrap).

    Returns:
        ``{"calibration": {...}, "tta": {...}, "conformal": {...}}``; every interval is a
        stratified bootstrap of the test split (``<name>_ci_low`` / ``<name>_ci_high``).
    """
    names = metadata["class_names"]
    _check_positive(params["positive_class"], names)
    blocks = {
        "calibration": _calibration_block(
            test_uncalibrated, test_predictions, calibration, names, params
        ),
        "tta": _tta_block(test_predictions, test_without_tta, settings["tta"], names, params),
        "conformal": _conformal_block(test_predictions, settings["conformal"], names, params),
    }
    c, t, s = blocks["calibration"], blocks["tta"], blocks["conformal"]
    logger.info(
        "Test: ECE(p(%s)) %.4f -> %.4f and Brier %.4f -> %.4f after T = %.3f, floor %.3f; "
        "AUROC %.4f "
        "without test-time views, %.4f with (%s); conformal coverage %.3f (target %.2f), "
        "mean set size %.2f",
        params["positive_class"],
        c["ece_positive_before"],
        c["ece_positive_after"],
        c["brier_score_before"],
        c["brier_score_after"],
        c["temperature"],
        c["floor"],
        t["auroc_without_tta"],
        t["auroc_with_tta"],
        t["mode"],
        s["coverage"],
        s["target_coverage"],
        s["mean_set_size"],
    )
    return blocks


def _with_ci(block: dict, key: str) -> str:
    return f"{fmt(block[key])} [{fmt(block[f'{key}_ci_low'])}, {fmt(block[f'{key}_ci_high'])}]"


#: How the report names what the temperature was fitted on (:func:`held_out_source`).
FITTED_ON = {
    "validation": (
        "the validation split, which also chose the training checkpoint. On a few hundred"
        " images the temperature follows that split's own chance and label noise, so read"
        " it with its interval (with evaluation.folds of 2 or more and evaluation.ensemble,"
        " it is fitted on the out-of-fold predictions instead)"
    ),
    "out-of-fold": (
        "the out-of-fold predictions: every development image, each predicted by the fold"
        " model that never saw it. Each is one model's prediction, sharper than the served"
        " average of all of them, so the temperature can soften the ensemble more than it"
        " needs (see the temperature's interval and the README's evaluation benchmark)"
    ),
}


def temperature_interval_text(calibration: dict[str, Any], confidence: float) -> str:
    """The temperature's bootstrap interval and what it says, for the report ('' if none)."""
    low = calibration.get("temperature_ci_low")
    high = calibration.get("temperature_ci_high")
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return ""
    text = (
        f"{confidence:.0%} interval over resamples of the {calibration['n_val']} images: "
        f"{low:.3f}-{high:.3f}"
    )
    if low <= 1.0 <= high:
        text += (
            "; it spans 1, so these images do not tell this temperature apart from no"
            " recalibration, and on new images it can as well harm as help: more held-out"
            " images narrow it"
        )
    return text + _bound_text(low, high)


def _bound_text(low: float, high: float) -> str:
    """Why an interval end sits on the temperature search's bound ('' if neither does)."""
    lowest, highest = cal.TEMPERATURE_BOUNDS
    if np.isclose(low, lowest, rtol=0.01):
        return (
            f"; its lower end is the search's bound {lowest:g}, not an estimate: in some"
            " resamples the images are told apart without error, and the likelihood then"
            " keeps rewarding a sharper temperature"
        )
    if np.isclose(high, highest, rtol=0.01):
        return (
            f"; its upper end is the search's bound {highest:g}, not an estimate: in some"
            " resamples the predictions carry no information about the labels"
        )
    return ""


def floor_text(calibration: dict[str, Any], n_classes: int, confidence: float) -> str:
    """What the fitted floor does, for the report ('' without one)."""
    floor = float(calibration.get("floor", 0.0))
    if calibration["method"] != "temperature_floor":
        return ""
    if floor == 0.0:
        return (
            "The floor fitted to 0 (no sign of a cap from label noise): plain temperature scaling."
        )
    low, high = calibration.get("floor_ci_low"), calibration.get("floor_ci_high")
    interval = (
        f" ({confidence:.0%} interval {low:.3f}-{high:.3f})"
        if low is not None and high is not None and np.isfinite(low) and np.isfinite(high)
        else ""
    )
    return (
        f"Then a floor eps = {floor:.3f}{interval} mixes in the uniform distribution, so no"
        f" class is given more than {1.0 - floor + floor / n_classes:.3f}: the held-out"
        " labels are right about that often even for the clearest images (label noise,"
        " readers who disagree), a cap a temperature alone cannot follow."
    )


def calibration_context(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """What ``templates/_calibration.*.j2`` show, from ``metrics.json`` (None: no section)."""
    if not all(k in metrics for k in ("calibration", "tta", "conformal")):
        return None
    c, t, s = metrics["calibration"], metrics["tta"], metrics["conformal"]
    positive = metrics["positive_class"]
    rows = [
        (label, _with_ci(c, f"{key}_before"), _with_ci(c, f"{key}_after"))
        for label, key in (
            (f"ECE of p({positive})", "ece_positive"),
            ("ECE (top label)", "ece_top_label"),
            ("Brier score", "brier_score"),
        )
    ]
    rows.append(("Log loss", fmt(c["log_loss_before"]), fmt(c["log_loss_after"])))
    views = "off" if t["mode"] == "off" else f"{t['mode']}, {t['passes']} views"
    return {
        "method": c["method"],
        "temperature": f"{c['temperature']:.3f}",
        "temperature_interval": temperature_interval_text(c, metrics["ci_confidence"]),
        "floor": floor_text(c, len(metrics["auroc_per_class"]), metrics["ci_confidence"]),
        "n_val": c["n_val"],
        "fitted_on": FITTED_ON[c["fitted_on"]],
        "held_out": c["fitted_on"],
        "rows": rows,
        "tta": views,
        "tta_rows": [
            ("without test-time views", _with_ci(t, "auroc_without_tta")),
            (f"with ({views})", _with_ci(t, "auroc_with_tta")),
        ],
        "alpha": fmt(s["alpha"]),
        "target": f"{s['target_coverage']:.0%}",
        "set_threshold": f"{s['threshold']:.4f}",
        "n_calibration": s["n_calibration"],
        "conformal_rows": [
            ("Coverage (true class in the set)", _with_ci(s, "coverage")),
            ("Mean set size", _with_ci(s, "mean_set_size")),
            *((f"Sets of {k} class(es)", str(v)) for k, v in s["set_sizes"].items()),
        ],
    }
