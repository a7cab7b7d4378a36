"""The self-contained HTML report and the model card (Markdown), rendered from templates.

Both are built from the reporting outputs only (metrics, operating point, data summary,
figures as PNG bytes) by ``templates/report.html.j2`` and ``templates/model_card.md.j2``.
The report embeds the figures as base64 ``data:`` URIs so that the one file can be mailed or
attached; the model card links to ``figures/<name>.png`` beside it. Labels and file names come
from the user's data: the templates escape them (HTML, or Markdown for the card).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from markupsafe import Markup

from breast_cancer_pipeline.geometry import Geometry
from breast_cancer_pipeline.manifest import MANIFEST_SPLITS
from breast_cancer_pipeline.templating import fmt, fmt_interval, render

from .clinical_sections import decision_curve_context, levels_context, subgroups_context
from .figures import confident_errors
from .sections import (
    Figure,
    calibration_context,
    comparison_rows,
    cross_validation_context,
    explanation_context,
    export_context,
    ood_context,
    png_base64,
)

#: Figure name (catalog entry ``<name>_figure``) and its caption, in report order.
FIGURES = (
    (
        "roc_pr",
        "ROC and precision-recall curves of the positive class vs the rest; the red dot "
        "is the operating point chosen on the validation split.",
    ),
    ("confusion_matrix", "Confusion matrix of the most probable class (counts, row shares)."),
    (
        "reliability",
        "Reliability diagram: predicted probability against observed frequency per "
        "bin; the bars count the images per bin.",
    ),
    ("learning_curves", "Loss and AUROC per epoch of both fine-tuning phases."),
    ("confident_errors", "The test images the model got wrong with the highest confidence."),
    (
        "gradcam",
        "Grad-CAM: where the backbone's features raise the true class's score, for the "
        "most confidently correct test images of each class.",
    ),
)

_LIMITS = (
    "Research use only. This model is not a medical device and must not be used to diagnose, "
    "screen or triage patients.",
    "The figures hold for images like the test split: same devices, protocol, population and "
    "preprocessing. Performance on other sites, scanners or populations is unknown until "
    "measured there.",
    "The operating threshold was chosen on the validation split; the sensitivity it reaches on "
    "new data varies (see the interval of the AUROC and the test sensitivity).",
    "Probabilities are only as calibrated as the reliability diagram shows; do not read them "
    "as patient risks without recalibration on the target population.",
    "Grad-CAM maps are coarse (the resolution of the backbone's last feature map) and show "
    "where the model looks, not why; they are not segmentations.",
)


#: Metrics at the operating threshold: (row name, ``metrics.json`` key).
_AT_THRESHOLD = (
    ("Sensitivity", "sensitivity"),
    ("Specificity", "specificity"),
    ("PPV", "ppv"),
    ("NPV", "npv"),
    ("F1", "f1"),
)


def data_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per class and split, and patients (groups) per split.

    Returns:
        One row per class plus ``total`` and ``patients`` rows; one column per split present
        (of ``train``, ``val``, ``test``, ``external``, in that order) and ``all``.
    """
    splits = [s for s in MANIFEST_SPLITS if s in set(manifest["split"])]
    counts = pd.crosstab(manifest["label"], manifest["split"]).reindex(columns=splits, fill_value=0)
    counts.loc["total"] = counts.sum()
    counts.loc["patients"] = [
        manifest.loc[manifest["split"] == s, "group"].nunique() for s in splits
    ]
    counts["all"] = [*counts.iloc[:-1].sum(axis=1), manifest["group"].nunique()]
    counts.index.name = counts.columns.name = None
    return counts


def _metric_rows(metrics: dict) -> list[tuple[str, str, str]]:
    positive = metrics["positive_class"]
    kind = "cluster bootstrap" if metrics.get("bootstrap") == "cluster" else "bootstrap"
    conf = f"{metrics['ci_confidence']:.0%} {kind}"
    at = f"at p({positive}) ≥ {metrics['threshold']:.3f}"
    return [
        ("Test images", str(metrics["n_test"]), ""),
        ("Accuracy", fmt(metrics["accuracy"]), "most probable class"),
        ("Balanced accuracy", fmt(metrics["balanced_accuracy"]), "mean per-class recall"),
        (
            "AUROC",
            fmt_interval(metrics, "auroc"),
            f"macro one-vs-rest when more than two classes; {conf} interval "
            f"({metrics['bootstrap_resamples']} resamples)",
        ),
        (
            f"AUROC {positive} vs rest",
            fmt_interval(metrics, "auroc_positive"),
            f"{conf} interval",
        ),
        (f"Average precision {positive}", fmt(metrics["average_precision_positive"]), ""),
        *((name, fmt(metrics[key]), at) for name, key in _AT_THRESHOLD),
        (
            "Confusion at threshold",
            f"TP {metrics['tp']} · FP {metrics['fp']} · TN {metrics['tn']} · FN {metrics['fn']}",
            at,
        ),
        (f"ECE of p({positive})", fmt(metrics["ece_positive"]), "expected calibration error"),
        (
            "ECE (top label)",
            fmt(metrics["ece_top_label"]),
            "confidence of the most probable class",
        ),
        (
            "Brier score",
            fmt(metrics.get("brier_score")),
            "squared error of the class probabilities",
        ),
        ("Log loss", fmt(metrics.get("log_loss")), "negative log-likelihood of the true class"),
    ]


def _failures(metrics: dict, errors: pd.DataFrame, ece_warning: float) -> list[dict[str, str]]:
    """Known failure cases: ``{"text": ...}`` lines, then ``{"path", "label", ...}`` errors."""
    items = []
    per_class = {c: v for c, v in metrics["auroc_per_class"].items() if v is not None}
    if per_class:
        worst = min(per_class, key=per_class.get)
        items.append(f"Weakest class (one-vs-rest AUROC): {worst} ({fmt(per_class[worst])}).")
    if metrics["fn"]:
        items.append(
            f"{metrics['fn']} {metrics['positive_class']} test image(s) fall below the threshold "
            "(false negatives)."
        )
    for subgroup in (metrics.get("subgroups") or {}).get("below_overall", []):
        items.append(
            f"Subgroup {subgroup}: its AUROC interval lies wholly below the overall test AUROC."
        )
    if metrics["ece_positive"] is not None and metrics["ece_positive"] > ece_warning:
        items.append(
            f"Probabilities are poorly calibrated (ECE {fmt(metrics['ece_positive'])} > "
            f"{ece_warning:g}): recalibrate before reading them as risks."
        )
    lines = [{"text": text} for text in items]
    lines += [
        {
            "path": str(row["path"]),
            "label": str(row["label"]),
            "predicted": str(row["predicted"]),
            "confidence": f"{row['confidence']:.0%}",
        }
        for _, row in errors.iterrows()
    ]
    return lines or [{"text": "No misclassified test image."}]


def _model_rows(metadata: dict, point: dict, positive: str) -> list[tuple[str, str]]:
    geometry = Geometry.from_config(metadata)
    resized = geometry.resize.replace("_", " ")
    return [
        ("Backbone", metadata["backbone"]),
        ("Weights at start", metadata.get("weights") or "random initialisation"),
        ("Input", f"{geometry.height} × {geometry.width} px ({resized}), {metadata['color_mode']}"),
        ("Classes", ", ".join(metadata["class_names"])),
        (
            "Operating point",
            f"p({positive}) ≥ {point['threshold']:.4f} ({point['rule']} on validation: "
            f"sensitivity {fmt(point['val_sensitivity'])}, "
            f"specificity {fmt(point['val_specificity'])}, n={point['n_val']})",
        ),
    ]


def _tile_rows(tiles: dict | None) -> list[tuple[str, str]]:
    """The model table's line on tiles (none for a whole-image network)."""
    if not tiles:
        return []
    count = tiles["n_tiles"]
    scale = "full resolution" if tiles["scale"] == 1 else f"1/{tiles['scale']:g} resolution"
    return [
        (
            "Tiles",
            f"{tiles['tile_size']} px cut at {scale}, "
            f"labels from the {tiles['labels']}, {tiles['tiles_per_image']:.1f} per image "
            f"(train/val/test {count['train']}/{count['val']}/{count['test']}); "
            f"image answer: {tiles['aggregation'].replace('_', ' ')} of its tiles; "
            f"a single test tile's AUROC {fmt(tiles['tile_auroc'])}",
        )
    ]


def _embedded_figures(figures: dict[str, Figure | None]) -> list[dict]:
    """The figures given, in report order, as base64 PNG for ``data:`` URIs."""
    return [
        {"name": name, "caption": caption, "base64": png_base64(figures[name])}
        for name, caption in FIGURES
        if figures.get(name) is not None
    ]


def _context(
    metrics: dict, point: dict, metadata: dict, manifest: pd.DataFrame, predictions, params
) -> dict[str, Any]:
    """What both templates show."""
    positive = metrics["positive_class"]
    errors = confident_errors(predictions, params["gallery"]["n_errors"])
    return {
        "title": f"Breast image classifier — {metadata['backbone']}",
        "positive": positive,
        "model_rows": _model_rows(metadata, point, positive) + _tile_rows(metrics.get("tiles")),
        "summary": data_summary(manifest),
        "metric_rows": _metric_rows(metrics),
        "auroc_rows": [(c, fmt(v)) for c, v in metrics["auroc_per_class"].items()],
        "calibration": {
            "ece_positive": fmt(metrics["ece_positive"]),
            "ece_top_label": fmt(metrics["ece_top_label"]),
            "bins": params["calibration_bins"],
            "brier_score": fmt(metrics.get("brier_score")),
            "log_loss": fmt(metrics.get("log_loss")),
        },
        "recalibration": calibration_context(metrics),
        "failures": _failures(metrics, errors, params["ece_warning"]),
        "external_rows": comparison_rows(metrics),
        "limits": _LIMITS,
    }


def render_report(
    metrics: dict[str, Any],
    operating_point: dict[str, Any],
    metadata: dict[str, Any],
    manifest: pd.DataFrame,
    predictions: pd.DataFrame,
    params: dict,
    ood_figure: Figure | None = None,
    **figures: Figure,
) -> tuple[str, str]:
    """Build ``report.html`` (figures embedded) and ``model_card.md``.

    Args:
        metrics: The test metrics (``metrics.json``); ``brier_score`` and ``log_loss`` are
            shown as "–" when absent.
        operating_point: The threshold chosen on the validation split.
        metadata: The classifier's metadata.
        manifest: The validated manifest (for the data summary and splits).
        predictions: The test predictions (for the failure cases).
        params: The ``reporting`` parameters.
        ood_figure: PNG of the out-of-distribution scores, shown with the ``ood`` block of
            ``metrics`` (``templates/_ood.html.j2``); the section is left out without both.
        **figures: PNG bytes (or a loader returning them) of each figure in :data:`FIGURES`,
            by name; a missing figure is left out of the report. ``cv_folds`` (with
            cross-validation) goes to the report's cross-validation section, ``subgroups``
            (the forest plot) and ``decision_curve`` to theirs (``templates/_levels.*.j2``,
            shown with the ``levels``, ``subgroups`` and ``decision_curve`` blocks).

    Returns:
        ``(html, markdown)``.
    """
    context = _context(metrics, operating_point, metadata, manifest, predictions, params)
    context["ood"] = ood_context(metrics.get("ood"), ood_figure)
    context["levels"] = levels_context(metrics)
    context["subgroups"] = subgroups_context(metrics, figures.pop("subgroups", None))
    context["decision_curve"] = decision_curve_context(metrics, figures.pop("decision_curve", None))
    context["export"] = export_context(metrics.get("export"))
    context["explanation"] = explanation_context(metrics.get("explanation"))
    summary = context.pop("summary")
    cv = cross_validation_context(metrics, figures.pop("cv_folds", None))
    report = render(
        "report.html.j2",
        **context,
        cv=cv,
        data_summary=Markup(summary.to_html(escape=True, classes="counts", border=0)),
        figures=_embedded_figures(figures),
    )
    card = render(
        "model_card.md.j2",
        **context,
        summary_header=["", *summary.columns],
        summary_rows=[
            [index, *row] for index, row in zip(summary.index, summary.values.tolist(), strict=True)
        ],
        figures=[{"name": name, "caption": caption} for name, caption in FIGURES],
    )
    return report, card
