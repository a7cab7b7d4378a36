"""The self-contained HTML report and the model card (Markdown).

Both are built from the reporting outputs only (metrics, operating point, data summary,
figures as PNG bytes); the report embeds the figures as base64 ``data:`` URIs so that the one
file can be mailed or attached, and the model card links to ``figures/<name>.png`` beside it.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Callable
from typing import Any

import pandas as pd

from .figures import confident_errors

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

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:980px;margin:2em auto;
padding:0 1em;color:#1d2733;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}
h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}
th,td{border:1px solid #d0d7de;padding:.3em .7em;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right;white-space:nowrap}
.banner{background:#fff4e5;border:1px solid #f0b36b;padding:.6em 1em;border-radius:4px}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #e1e4e8}
figcaption{font-size:.9em;color:#57606a}.muted{color:#57606a;font-size:.9em}
"""

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


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(metrics: dict, key: str) -> str:
    low, high = _fmt(metrics[f"{key}_ci_low"]), _fmt(metrics[f"{key}_ci_high"])
    return f"{_fmt(metrics[key])} [{low}, {high}]"


def data_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per class and split, and patients (groups) per split.

    Returns:
        One row per class plus ``patients`` and ``total`` rows; one column per split present
        (``train``, ``val``, ``test``) and ``all``.
    """
    splits = [s for s in ("train", "val", "test") if s in set(manifest["split"])]
    counts = pd.crosstab(manifest["label"], manifest["split"]).reindex(columns=splits, fill_value=0)
    counts.loc["total"] = counts.sum()
    counts.loc["patients"] = [
        manifest.loc[manifest["split"] == s, "group"].nunique() for s in splits
    ]
    counts["all"] = [*counts.iloc[:-1].sum(axis=1), manifest["group"].nunique()]
    return counts


def _metric_rows(metrics: dict, point: dict) -> list[tuple[str, str, str]]:
    positive = metrics["positive_class"]
    conf = f"{metrics['ci_confidence']:.0%}"
    at = f"at p({positive}) ≥ {metrics['threshold']:.3f}"
    return [
        ("Test images", str(metrics["n_test"]), ""),
        ("Accuracy", _fmt(metrics["accuracy"]), "most probable class"),
        ("Balanced accuracy", _fmt(metrics["balanced_accuracy"]), "mean per-class recall"),
        (
            "AUROC",
            _ci(metrics, "auroc"),
            f"macro one-vs-rest when more than two classes; {conf} bootstrap interval "
            f"({metrics['bootstrap_resamples']} resamples)",
        ),
        (f"AUROC {positive} vs rest", _ci(metrics, "auroc_positive"), f"{conf} bootstrap interval"),
        (f"Average precision {positive}", _fmt(metrics["average_precision_positive"]), ""),
        ("Sensitivity", _fmt(metrics["sensitivity"]), at),
        ("Specificity", _fmt(metrics["specificity"]), at),
        ("PPV", _fmt(metrics["ppv"]), at),
        ("NPV", _fmt(metrics["npv"]), at),
        ("F1", _fmt(metrics["f1"]), at),
        (
            "Confusion at threshold",
            f"TP {metrics['tp']} · FP {metrics['fp']} · TN {metrics['tn']} · FN {metrics['fn']}",
            at,
        ),
        (f"ECE of p({positive})", _fmt(metrics["ece_positive"]), "expected calibration error"),
        (
            "ECE (top label)",
            _fmt(metrics["ece_top_label"]),
            "confidence of the most probable class",
        ),
    ]


def _failure_lines(metrics: dict, errors: pd.DataFrame, ece_warning: float) -> list[str]:
    lines = []
    per_class = {c: v for c, v in metrics["auroc_per_class"].items() if v is not None}
    if per_class:
        worst = min(per_class, key=per_class.get)
        lines.append(f"Weakest class (one-vs-rest AUROC): {worst} ({_fmt(per_class[worst])}).")
    if metrics["fn"]:
        lines.append(
            f"{metrics['fn']} {metrics['positive_class']} test image(s) fall below the threshold "
            "(false negatives)."
        )
    if metrics["ece_positive"] is not None and metrics["ece_positive"] > ece_warning:
        lines.append(
            f"Probabilities are poorly calibrated (ECE {_fmt(metrics['ece_positive'])} > "
            f"{ece_warning:g}): recalibrate before reading them as risks."
        )
    for _, row in errors.iterrows():
        lines.append(
            f"`{row['path']}`: {row['label']} called {row['predicted']} with "
            f"{row['confidence']:.0%} confidence."
        )
    return lines or ["No misclassified test image."]


def _code(text: str) -> str:
    """Markdown `code` spans as HTML ``<code>``."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", text)


def _cell(value: Any) -> str:
    text = str(value)
    numeric = text.replace(".", "", 1).replace(" [", "").replace(", ", "").replace("]", "")
    css = " class='num'" if numeric.replace(".", "").isdigit() else ""
    return f"<td{css}>{html.escape(text)}</td>"


def _table_html(header: list[str] | None, rows: list[list[Any]]) -> str:
    head = ""
    if header:
        head = "<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        head += "</tr></thead>"
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _table_md(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_report(
    metrics: dict[str, Any],
    operating_point: dict[str, Any],
    metadata: dict[str, Any],
    manifest: pd.DataFrame,
    predictions: pd.DataFrame,
    params: dict,
    **figures: bytes | Callable[[], bytes],
) -> tuple[str, str]:
    """Build ``report.html`` (figures embedded) and ``model_card.md``.

    Args:
        metrics: The test metrics (``metrics.json``).
        operating_point: The threshold chosen on the validation split.
        metadata: The classifier's metadata.
        manifest: The validated manifest (for the data summary and splits).
        predictions: The test predictions (for the failure cases).
        params: The ``reporting`` parameters.
        **figures: PNG bytes of each figure in :data:`FIGURES`, by name.

    Returns:
        ``(html, markdown)``.
    """
    summary = data_summary(manifest)
    errors = confident_errors(predictions, params["gallery"]["n_errors"])
    title = f"Breast image classifier — {metadata['backbone']}"
    positive = metrics["positive_class"]
    summary_rows = [
        [idx, *row] for idx, row in zip(summary.index, summary.to_numpy().tolist(), strict=True)
    ]
    summary_header = ["", *summary.columns]
    metric_rows = [list(r) for r in _metric_rows(metrics, operating_point)]
    auroc_rows = [[c, _fmt(v)] for c, v in metrics["auroc_per_class"].items()]
    model_rows = [
        ["Backbone", metadata["backbone"]],
        ["Weights at start", metadata.get("weights") or "random initialisation"],
        [
            "Input",
            f"{metadata['image_size']} × {metadata['image_size']} px, {metadata['color_mode']}",
        ],
        ["Classes", ", ".join(metadata["class_names"])],
        [
            "Operating point",
            f"p({positive}) ≥ {operating_point['threshold']:.4f} "
            f"({operating_point['rule']} on validation: "
            f"sensitivity {_fmt(operating_point['val_sensitivity'])}, "
            f"specificity {_fmt(operating_point['val_specificity'])}, "
            f"n={operating_point['n_val']})",
        ],
    ]
    failures = _failure_lines(metrics, errors, params["ece_warning"])

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p class='banner'><b>Research use only.</b> Not a diagnostic device.</p>",
        "<h2>Model</h2>",
        _table_html(None, model_rows),
        "<h2>Data and splits</h2><p class='muted'>Images per class and split; splits are by "
        "patient (group), so no patient appears in two splits.</p>",
        _table_html(summary_header, summary_rows),
        "<h2>Test metrics</h2>",
        _table_html(["metric", "value", "note"], metric_rows),
        "<h3>One-vs-rest AUROC per class</h3>",
        _table_html(["class", "AUROC"], auroc_rows),
        "<h2>Figures</h2>",
    ]
    for name, caption in FIGURES:
        data = figures.get(name)
        if data is None:
            continue
        data = data() if callable(data) else data
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(
            f"<figure id='{name}'><img alt='{name}' src='data:image/png;base64,{encoded}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts += [
        "<h2>Known failure cases</h2><ul>",
        *(f"<li>{_code(html.escape(line))}</li>" for line in failures),
        "</ul><h2>Intended use and limits</h2><ul>",
        *(f"<li>{html.escape(line)}</li>" for line in _LIMITS),
        "</ul></body></html>",
    ]
    report = "\n".join(parts)

    card = [
        f"# Model card: {title}",
        "",
        "> **Research use only.** Not a diagnostic device.",
        "",
        "## Model",
        "",
        _table_md(["", "model"], model_rows),
        "",
        "## Intended use and limits",
        "",
        *(f"- {line}" for line in _LIMITS),
        "",
        "## Data and splits",
        "",
        "Images per class and split; splits are by patient (group).",
        "",
        _table_md(summary_header, summary_rows),
        "",
        "## Metrics (test split)",
        "",
        _table_md(["metric", "value", "note"], metric_rows),
        "",
        _table_md(["class", "one-vs-rest AUROC"], auroc_rows),
        "",
        "## Calibration",
        "",
        f"Expected calibration error of p({positive}): {_fmt(metrics['ece_positive'])} "
        f"({params['calibration_bins']} equal-width bins); of the top-label confidence: "
        f"{_fmt(metrics['ece_top_label'])}. See `figures/reliability.png`.",
        "",
        "## Known failure cases",
        "",
        *(f"- {line}" for line in failures),
        "",
        "## Figures",
        "",
        *(f"- [{name}](figures/{name}.png): {caption}" for name, caption in FIGURES),
        "",
    ]
    return report, "\n".join(card)
