"""The report's sections on decisions as clinicians read them: levels, subgroups, net benefit.

Each function returns what its partial template (``_levels.*.j2``) shows, from
``metrics.json``, or ``None`` when its block is absent (a ``metrics.json`` of an older run).
"""

from __future__ import annotations

from typing import Any

from breast_cancer_pipeline.manifest import EXTERNAL_SPLIT
from breast_cancer_pipeline.templating import fmt, fmt_interval

from .sections import Figure, png_base64

#: Rows of the levels table: (row name, key of a level's block; ``n`` is counted).
_LEVEL_ROWS = (
    ("Cases (n)", "n"),
    ("AUROC", "auroc"),
    ("Threshold on p({positive})", "threshold"),
    ("Sensitivity", "sensitivity"),
    ("Specificity", "specificity"),
    ("PPV", "ppv"),
    ("NPV", "npv"),
    ("Brier score", "brier_score"),
    ("ECE of p({positive})", "ece_positive"),
)


def bootstrap_text(kind: str | None, confidence: float, resamples: int) -> str:
    """Which bootstrap made the intervals, in words."""
    if kind == "cluster":
        return (
            f"{confidence:.0%} intervals from a cluster bootstrap ({resamples} resamples): "
            "patients are resampled, stratified by their label, each with all of its images, "
            "because a patient has several images and they are not independent."
        )
    return (
        f"{confidence:.0%} intervals from a stratified bootstrap of the images ({resamples} "
        "resamples): every patient has one image here."
    )


def _cell(block: dict[str, Any] | None, key: str) -> str:
    if not block:
        return "–"
    if key == "n":
        return str(block["n"])
    if key == "threshold":
        return fmt(block.get(key), 4)
    return fmt_interval(block, key, optional=True)


def _side_by_side(
    image: dict[str, Any] | None, levels: dict[str, dict[str, Any] | None], positive: str
) -> list[list[str]]:
    return [
        [name.format(positive=positive), _cell(image, key)]
        + [_cell(block, key) for block in levels.values()]
        for name, key in _LEVEL_ROWS
    ]


def levels_context(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The image level and each level side by side, on test and on the external site."""
    levels = metrics.get("levels")
    if not levels:
        return None
    positive = metrics["positive_class"]
    image = {**metrics, "n": metrics["n_test"]}
    external = metrics.get(EXTERNAL_SPLIT)
    return {
        "header": ["", "image", *levels],
        "test_rows": _side_by_side(image, levels, positive),
        "external_rows": None
        if not external
        else _side_by_side(external, {k: v.get("external") for k, v in levels.items()}, positive),
        "definitions": [
            f"{name}: one case per distinct ({', '.join(block['columns'])}); its images' "
            f"probabilities combined by {block['aggregation']}, its label by "
            f"{block['label_rule']}; threshold chosen on the {block['n_val']} validation "
            f"{name}s ({block['threshold_source']}); {block['n_images']} test images"
            for name, block in levels.items()
        ],
        "bootstrap": bootstrap_text(
            metrics.get("bootstrap"), metrics["ci_confidence"], metrics["bootstrap_resamples"]
        ),
    }


def subgroups_context(metrics: dict[str, Any], figure: Figure | None) -> dict[str, Any] | None:
    """The subgroup table, the forest plot and the subgroups below the overall estimate."""
    subgroups = metrics.get("subgroups")
    if not subgroups:
        return None
    overall = subgroups["overall"]
    rows = [["overall (test)", "", str(overall["n"]), fmt_interval(overall, "auroc"), "", ""]]
    for column, values in subgroups["columns"].items():
        rows += [
            [
                column,
                value,
                str(found["n"]),
                fmt_interval(found, "auroc"),
                fmt(found["sensitivity"]),
                fmt(found["specificity"]),
            ]
            for value, found in values.items()
        ]
    rows[0][4:] = [fmt(overall["sensitivity"]), fmt(overall["specificity"])]
    return {
        "rows": rows,
        "below": subgroups["below_overall"],
        "overall": fmt(overall["auroc"]),
        "base64": png_base64(figure) if figure is not None else None,
    }


def decision_curve_context(metrics: dict[str, Any], figure: Figure | None) -> dict[str, Any] | None:
    """Where the model helps (net benefit above treat-all and treat-none), per scope."""
    curve = metrics.get("decision_curve")
    if not curve:
        return None
    rows = [
        [
            scope,
            str(found["n"]),
            fmt(found["prevalence"]),
            ", ".join(f"{a:.2f}–{b:.2f}" for a, b in found["helps"]) or "nowhere",
        ]
        for scope, found in curve.items()
        if scope != "thresholds"
    ]
    return {
        "rows": rows,
        "thresholds": curve["thresholds"],
        "base64": png_base64(figure) if figure is not None else None,
    }
