"""The report's optional sections: what each partial template shows, from ``metrics.json``.

One function per section, each returning ``None`` (or no rows) when its block is absent:
recalibration, test-time views and conformal sets (``_calibration.*.j2``), cross-validation
(``_cv.html.j2``), the external site (``_external.*.j2``), the out-of-distribution check
(``_ood.*.j2``) and the explanations against expert masks (``_explanation.*.j2``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np

from breast_cancer_pipeline.evaluation.calibration import TEMPERATURE_BOUNDS
from breast_cancer_pipeline.manifest import EXTERNAL_SPLIT
from breast_cancer_pipeline.templating import fmt, fmt_interval

#: A figure as PNG bytes, or a loader returning them (a lazily loaded catalog entry).
Figure = bytes | Callable[[], bytes]


def png_base64(figure: Figure | None) -> str | None:
    """A figure as base64 text for a ``data:`` URI (``None`` without one)."""
    data = figure() if callable(figure) else figure
    return base64.b64encode(data).decode("ascii") if data else None


# ------------------------------------------------------------------------------ recalibration
#: How the report names what the temperature was fitted on
#: (:func:`.fits.recalibration.held_out_source`).
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
    lowest, highest = TEMPERATURE_BOUNDS
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
        (label, fmt_interval(c, f"{key}_before"), fmt_interval(c, f"{key}_after"))
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
            ("without test-time views", fmt_interval(t, "auroc_without_tta")),
            (f"with ({views})", fmt_interval(t, "auroc_with_tta")),
        ],
        "alpha": fmt(s["alpha"]),
        "target": f"{s['target_coverage']:.0%}",
        "set_threshold": f"{s['threshold']:.4f}",
        "n_calibration": s["n_calibration"],
        "conformal_rows": [
            ("Coverage (true class in the set)", fmt_interval(s, "coverage")),
            ("Mean set size", fmt_interval(s, "mean_set_size")),
            *((f"Sets of {k} class(es)", str(v)) for k, v in s["set_sizes"].items()),
        ],
    }


# ------------------------------------------------------------------------------ cross-validation
#: What the report says of the estimate unless backbone and head selection are nested.
SELECTION_BIAS = (
    "The backbone and the head were selected (backbone_selection) on the same development "
    "images that the folds re-use, so the cross-validated figures are optimistically biased: "
    "selection is not nested inside the folds."
)


def cross_validation_context(
    metrics: dict[str, Any], figure: Figure | None
) -> dict[str, Any] | None:
    """What ``_cv.html.j2`` shows: ``None`` without cross-validation (one split).

    Args:
        metrics: The test metrics, with their ``cv`` block when there are folds.
        figure: The PNG of :func:`.figures.plot_cv_folds` (or a loader returning it), if drawn.
    """
    cv = metrics.get("cv")
    if not cv:
        return None
    rows = [
        (name, str(fold["n_images"]), fmt(fold["auroc"]), fmt_interval(fold, "auroc", value=False))
        for name, fold in cv["per_fold"].items()
    ]
    ensemble = cv.get("ensemble")
    return {
        "folds": cv["folds"],
        "figure": png_base64(figure),
        "rows": rows,
        "mean": fmt(cv["auroc_mean"]),
        "std": fmt(cv["auroc_std"]),
        "mean_ci": fmt_interval(cv, "auroc", value=False),
        "pooled": fmt(cv["auroc_pooled"]),
        "pooled_ci": fmt_interval(cv, "auroc_pooled", value=False),
        "confidence": f"{100 * cv['ci_confidence']:.0f}%",
        "bias": None if cv.get("nested_selection") else SELECTION_BIAS,
        "ensemble": None
        if not ensemble
        else [
            (
                "single model",
                fmt(ensemble["single_test_auroc"]),
                fmt_interval(ensemble, "single_test_auroc", value=False),
            ),
            (
                f"average of {ensemble['members']} fold models",
                fmt(ensemble["test_auroc"]),
                fmt_interval(ensemble, "test_auroc", value=False),
            ),
        ],
    }


# ------------------------------------------------------------------------------ external site
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
        return str(block[key]) if key == "n" else fmt_interval(block, key, optional=True)

    return [(name, cell(internal, key), cell(external, key)) for name, key in rows]


# ------------------------------------------------------------------------------ out of distribution
def ood_report_rows(ood: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """The rows of the report's out-of-distribution table (empty without an ``ood`` block)."""
    if not ood:
        return []
    energy = ood["comparison"]["energy"]
    rows = [
        (
            "Test images accepted",
            f"{ood['test_acceptance']:.1%}",
            f"{energy['test_acceptance']:.1%}",
        ),
        (
            "Validation images accepted",
            f"{ood['val_acceptance']:.1%}",
            f"{energy['val_acceptance']:.1%}",
        ),
        (
            "OOD images flagged (all kinds)",
            f"{ood['ood_detection_rate']:.1%}",
            f"{energy['ood_detection_rate']:.1%}",
        ),
    ]
    for kind, value in ood["ood_detection_rate_per_kind"].items():
        other = energy["ood_detection_rate_per_kind"].get(kind, float("nan"))
        rows.append((f"OOD flagged: {kind.replace('_', ' ')}", f"{value:.1%}", f"{other:.1%}"))
    return rows


def ood_context(ood: dict | None, figure: Figure | None) -> dict | None:
    """What ``_ood.*.j2`` show, or ``None`` (no section) without the block or the figure."""
    if not ood or figure is None:
        return None
    return {**ood, "rows": ood_report_rows(ood), "base64": png_base64(figure)}


# ------------------------------------------------------------------------------ exported files
def export_context(export: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``_export.md.j2`` shows of ``metrics.json``'s ``export`` block, or ``None``.

    One row per format: the file, whether it is shipped, the largest difference of its
    probabilities from Keras's at each batch size, the tools, and the opset, operators or the
    error that kept it out.
    """
    if not export:
        return None
    rows = []
    for block in export.values():
        sizes = sorted(int(k.rsplit("_", 1)[1]) for k in block if k.startswith("max_abs_diff_b"))
        differences = ", ".join(
            f"{block[f'max_abs_diff_batch_{size}']:.1e} (batch {size})" for size in sizes
        )
        if "opset" in block:
            note = f"opset {block['opset']}"
        else:
            note = f"{block.get('operators', '')}; quantization {block.get('quantization', '')}"
        if block.get("error"):
            note = f"not shipped: {block['error'].splitlines()[0][:200]}"
        rows.append(
            (
                block["file"],
                "yes" if block["shipped"] else "no",
                differences or "–",
                block["converter"],
                block["runtime"],
                note,
            )
        )
    first = next(iter(export.values()))
    return {
        "rows": rows,
        "graph": first.get("graph", ""),
        "images": first.get("images"),
        "tolerance": first.get("tolerance"),
    }


# ------------------------------------------------------------------------------ explanations
def explanation_context(explanation: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``_explanation.*.j2`` show of the ``explanation`` block, or ``None`` (no masks).

    One row overall and one per class: images, the Grad-CAM's energy inside the mask and the
    pointing game with their intervals, and the mask's share of the image (the energy inside
    of a map spread evenly).
    """
    if not explanation or not explanation.get("n"):
        return None

    def row(name: str, block: dict[str, Any]) -> tuple[str, str, str, str, str]:
        return (
            name,
            str(block["n"]),
            fmt_interval(block, "energy_inside", optional=True),
            fmt(block.get("mask_area")),
            fmt_interval(block, "pointing_game", optional=True),
        )

    per_class = explanation.get("per_class") or {}
    kind = "cluster bootstrap" if explanation.get("bootstrap") == "cluster" else "bootstrap"
    return {
        **explanation,
        "interval_kind": kind,
        "overall": row("all", explanation)[2:],
        "rows": [row("all", explanation), *(row(c, b) for c, b in per_class.items())],
    }
