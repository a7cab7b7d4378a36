"""Reporting figures, each returned as PNG bytes (saved as files, logged to MLflow, embedded).

matplotlib comes from :mod:`breast_cancer_pipeline.plotting` (Agg backend, imported on first use,
like TensorFlow).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.evaluation.ood import KINDS
from breast_cancer_pipeline.metrics import json_float
from breast_cancer_pipeline.plotting import figure_png, pyplot


def confident_errors(predictions: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` misclassified test images the model was most sure about.

    Returns:
        Rows of ``predictions`` where ``label != predicted``, sorted by the probability of the
        predicted class (descending), with that probability as ``confidence``.
    """
    wrong = predictions[predictions["label"] != predictions["predicted"]].copy()
    wrong["confidence"] = [float(row[f"p_{row['predicted']}"]) for _, row in wrong.iterrows()]
    return wrong.sort_values("confidence", ascending=False, kind="stable").head(n)


def plot_confusion_matrix(
    predictions: pd.DataFrame, metadata: dict[str, Any], params: dict
) -> bytes:
    """The test confusion matrix (argmax label): counts and row percentages."""
    from sklearn.metrics import confusion_matrix

    plt = pyplot()
    names = metadata["class_names"]
    matrix = confusion_matrix(predictions["label"], predictions["predicted"], labels=names)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 1.2 * len(names) + 1.5))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{matrix[i, j]}\n{shares[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if shares[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted (most probable class)")
    ax.set_ylabel("true")
    ax.set_title(f"Test confusion matrix (n={len(predictions)})")
    return figure_png(fig, params["figure_dpi"])


def plot_roc_pr(
    roc: pd.DataFrame, pr: pd.DataFrame, metrics: dict[str, Any], params: dict
) -> bytes:
    """ROC and precision-recall curves of the positive class vs the rest, with the threshold."""
    plt = pyplot()
    positive = metrics["positive_class"]
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4.6))
    low, high = (
        json_float(metrics["auroc_positive_ci_low"]),
        json_float(metrics["auroc_positive_ci_high"]),
    )
    ax_roc.plot(
        roc["fpr"],
        roc["tpr"],
        lw=2,
        label=f"AUROC {json_float(metrics['auroc_positive']):.3f} [{low:.3f}, {high:.3f}]",
    )
    ax_roc.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax_roc.scatter(
        [1 - json_float(metrics["specificity"])],
        [json_float(metrics["sensitivity"])],
        c="crimson",
        zorder=3,
        label=f"threshold {metrics['threshold']:.3f} ({metrics['threshold_rule']}, val)",
    )
    ax_roc.set(
        xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC: {positive} vs rest (test)"
    )
    ax_roc.legend(loc="lower right", fontsize=8)
    ax_pr.plot(
        pr["recall"],
        pr["precision"],
        lw=2,
        label=f"AP {json_float(metrics['average_precision_positive']):.3f}",
    )
    ax_pr.scatter(
        [json_float(metrics["sensitivity"])],
        [json_float(metrics["ppv"])],
        c="crimson",
        zorder=3,
        label="operating point",
    )
    prevalence = (metrics["tp"] + metrics["fn"]) / max(metrics["n_test"], 1)
    ax_pr.axhline(prevalence, ls="--", c="grey", lw=1, label=f"prevalence {prevalence:.2f}")
    ax_pr.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        title="Precision-recall (test)",
        ylim=(0, 1.02),
    )
    ax_pr.legend(loc="lower left", fontsize=8)
    for ax in (ax_roc, ax_pr):
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
    return figure_png(fig, params["figure_dpi"])


def plot_reliability(calibration: pd.DataFrame, metrics: dict[str, Any], params: dict) -> bytes:
    """Reliability diagram of the positive class's probability, with the ECE.

    The title also gives the Brier score and the log loss of all classes' probabilities.
    """
    plt = pyplot()
    positive = metrics["positive_class"]
    fig, (ax, ax_count) = plt.subplots(
        2, 1, figsize=(5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    ax.plot(
        calibration["mean_predicted"],
        calibration["observed_fraction"],
        marker="o",
        lw=2,
        label="model",
    )
    ax.set(
        ylabel=f"observed fraction {positive}",
        ylim=(0, 1),
        title=(
            f"Reliability of p({positive}), ECE {json_float(metrics['ece_positive']):.3f}\n"
            f"all classes: Brier {json_float(metrics['brier_score']):.3f}, "
            f"log loss {json_float(metrics['log_loss']):.3f}"
        ),
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    width = (calibration["bin_high"] - calibration["bin_low"]).to_numpy()
    ax_count.bar(
        calibration["bin_low"], calibration["count"], width=width, align="edge", color="steelblue"
    )
    ax_count.set(xlabel=f"predicted p({positive})", ylabel="images", xlim=(0, 1))
    return figure_png(fig, params["figure_dpi"])


def plot_learning_curves(learning_curves: pd.DataFrame, params: dict) -> bytes:
    """Loss and AUROC per epoch of both finetune phases (training and validation)."""
    plt = pyplot()
    panels = [("loss", "loss"), ("auc", "AUROC")]
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 4))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for column, style in ((key, "-"), (f"val_{key}", "--")):
            if column in learning_curves:
                ax.plot(learning_curves["epoch"], learning_curves[column], style, label=column)
        for boundary in learning_curves.groupby("phase", sort=False)["epoch"].min().iloc[1:]:
            ax.axvline(boundary - 0.5, c="grey", lw=1, ls=":")
        ax.set(xlabel="epoch (dotted line: start of the next phase)", title=title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return figure_png(fig, params["figure_dpi"])


def _image_lookup(model_input: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each test image's pixels as the network saw them; with tiles, its middle tile."""
    paths = [str(p) for p in np.asarray(model_input["paths_test"])]
    images = model_input["x_test"]
    if "tile_image_test" not in model_input:
        return {p: np.asarray(images[i]) for i, p in enumerate(paths)}
    image = np.asarray(model_input["tile_image_test"])
    first = np.searchsorted(image, np.arange(len(paths)))
    middle = first + np.bincount(image, minlength=len(paths)) // 2
    return {p: np.asarray(images[middle[i]]) for i, p in enumerate(paths)}


def _show(ax: Any, image: np.ndarray) -> None:
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
    ax.axis("off")


def plot_confident_errors(
    predictions: pd.DataFrame, model_input: dict[str, np.ndarray], params: dict
) -> bytes:
    """A gallery of the most confident test errors (true and predicted label, confidence)."""
    plt = pyplot()
    errors = confident_errors(predictions, params["gallery"]["n_errors"])
    lookup = _image_lookup(model_input)
    cols = 4
    rows = max(1, -(-len(errors) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (_, row) in zip(axes.flat, errors.iterrows(), strict=False):
        _show(ax, lookup[str(row["path"])])
        ax.set_title(
            f"true {row['label']}\npred {row['predicted']} ({row['confidence']:.0%})", fontsize=9
        )
    if errors.empty:
        axes[0, 0].text(0.5, 0.5, "no misclassified test image", ha="center", va="center")
    fig.suptitle("Most confident errors (test)")
    return figure_png(fig, params["figure_dpi"])


def plot_gradcam(
    classifier: Any,
    predictions: pd.DataFrame,
    model_input: dict[str, np.ndarray],
    metadata: dict[str, Any],
    params: dict,
) -> bytes:
    """Grad-CAM overlays for the most confidently correct test images of each class.

    Each row is a class; each image shows where the backbone's features raise that class's
    score (:func:`breast_cancer_pipeline.explain.grad_cam`), drawn by
    :func:`breast_cancer_pipeline.explain.overlay` as the served ``gradcam_png`` is.
    """
    from breast_cancer_pipeline.explain import grad_cam, overlay

    plt = pyplot()
    settings = params["gradcam"]
    names = metadata["class_names"]
    lookup = _image_lookup(model_input)
    per_class = settings["per_class"]
    fig, axes = plt.subplots(
        len(names), per_class, figsize=(2.6 * per_class, 2.7 * len(names)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for k, name in enumerate(names):
        rows = (
            predictions[predictions["label"] == name]
            .sort_values(f"p_{name}", ascending=False)
            .head(per_class)
        )
        if rows.empty:
            continue
        images = np.stack([lookup[str(p)] for p in rows["path"]])
        heat = grad_cam(classifier, images, k, layer=settings["layer"])
        for ax, image, cam, p in zip(axes[k], images, heat, rows[f"p_{name}"], strict=False):
            ax.imshow(overlay(image, cam, settings["alpha"]))
            ax.set_title(f"{name} (p={p:.2f})", fontsize=9)
    fig.suptitle("Grad-CAM: regions that raise the true class's score (test)")
    return figure_png(fig, params["figure_dpi"])


def plot_cv_folds(cv: dict[str, Any], params: dict) -> bytes:
    """Per-fold AUROC with bootstrap intervals, the mean's t-interval and the pooled AUROC."""
    plt = pyplot()
    names = list(cv["per_fold"])
    values = np.array([json_float(cv["per_fold"][n]["auroc"]) for n in names])
    lows = np.array([json_float(cv["per_fold"][n]["auroc_ci_low"]) for n in names])
    highs = np.array([json_float(cv["per_fold"][n]["auroc_ci_high"]) for n in names])
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(names) + 2), 3.6))
    x = np.arange(len(names))
    ax.errorbar(x, values, yerr=[values - lows, highs - values], fmt="o", capsize=4)
    mean, low, high = (json_float(cv[k]) for k in ("auroc_mean", "auroc_ci_low", "auroc_ci_high"))
    ax.axhline(mean, color="C1", lw=1.5, label=f"mean {mean:.3f}")
    if not math.isnan(low):
        ax.axhspan(low, high, color="C1", alpha=0.15, label="t-interval of the mean")
    ax.axhline(
        json_float(cv["auroc_pooled"]), color="C2", ls="--", lw=1.2, label="pooled out-of-fold"
    )
    bottom = np.nanmin([*lows, low, 0.5]) if not np.isnan(lows).all() else 0.5
    ax.set(xticks=x, xticklabels=names, ylabel="AUROC (held-out fold)")
    ax.set(xlim=(-0.5, len(names) - 0.5), ylim=(max(0.0, bottom - 0.05), 1.01))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="lower right")
    return figure_png(fig, params["figure_dpi"])


def plot_ood_scores(table: pd.DataFrame, ood: dict[str, Any], params: dict) -> bytes:
    """Histograms of the score for train, test and each OOD kind, with the threshold."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    scores = table["score"].to_numpy(dtype=float)
    low, high = max(scores.min(), 1e-6), max(scores.max(), ood["threshold"]) * 1.05
    log_scale = high / low > 20
    bins = np.geomspace(low, high, 50) if log_scale else np.linspace(low, high, 50)
    groups = [("train", table["set"] == "train"), ("test", table["set"] == "test")]
    groups += [(f"OOD: {k}", (table["set"] == "ood") & (table["kind"] == k)) for k in KINDS]
    for label, rows in groups:
        if rows.any():
            ax.hist(scores[rows.to_numpy()], bins=bins, histtype="step", lw=1.6, label=label)
    ax.axvline(ood["threshold"], c="crimson", ls="--", lw=1.5)
    ax.text(
        ood["threshold"],
        ax.get_ylim()[1] * 0.95,
        f" threshold {ood['threshold']:.3g}",
        color="crimson",
        va="top",
        fontsize=8,
    )
    if log_scale:
        ax.set_xscale("log")
    ax.set(
        xlabel=f"out-of-distribution score ({ood['method']}; higher: less like the training data)",
        ylabel="images",
        title=(
            f"Test accepted {ood['test_acceptance']:.0%}, OOD images flagged "
            f"{ood['ood_detection_rate']:.0%} (threshold accepts {ood['accept_rate']:.0%} of val)"
        ),
    )
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    return figure_png(fig, params["figure_dpi"])


def _forest_rows(subgroups: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(label, figures)`` of the overall estimate, then of every subgroup, in report order."""
    overall = subgroups["overall"]
    rows = [(f"overall test (n={overall['n']})", overall)]
    for column, values in subgroups["columns"].items():
        rows += [(f"{column} = {value} (n={found['n']})", found) for value, found in values.items()]
    return rows


def plot_subgroups(metrics: dict[str, Any], params: dict) -> bytes:
    """Forest plot: AUROC with its interval per subgroup, against the overall test AUROC."""
    plt = pyplot()
    overall = {"n": metrics.get("n_test", 0), **metrics}  # without subgroups: the overall only
    rows = _forest_rows(metrics.get("subgroups") or {"overall": overall, "columns": {}})
    values = np.array([json_float(found.get("auroc")) for _, found in rows])
    lows = np.array([json_float(found.get("auroc_ci_low")) for _, found in rows])
    highs = np.array([json_float(found.get("auroc_ci_high")) for _, found in rows])
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    below = highs < values[0]
    colours = np.where(below, "crimson", "C0")
    for yi, v, lo, hi, colour in zip(y, values, lows, highs, colours, strict=True):
        if not math.isnan(lo):
            ax.plot([lo, hi], [yi, yi], color=colour, lw=1.6)
        ax.plot([v], [yi], "s" if yi == y[0] else "o", color=colour)
    if not math.isnan(values[0]):
        ax.axvline(values[0], color="grey", ls="--", lw=1)
    ax.set_yticks(y, [label for label, _ in rows], fontsize=8)
    finite = np.concatenate([lows[~np.isnan(lows)], values[~np.isnan(values)], [0.5]])
    ax.set_xlim(max(0.0, finite.min() - 0.05), 1.01)
    ax.set_xlabel("AUROC (bootstrap interval); red: interval wholly below the overall")
    ax.grid(alpha=0.3, axis="x")
    return figure_png(fig, params["figure_dpi"])


def plot_decision_curve(table: pd.DataFrame, metrics: dict[str, Any], params: dict) -> bytes:
    """Net benefit of the model, treat-all and treat-none, per scope (image and each level)."""
    plt = pyplot()
    scopes = [c for c in table.columns if f"{c}_treat_all" in table.columns]
    fig, axes = plt.subplots(1, len(scopes), figsize=(4.6 * len(scopes), 3.8), squeeze=False)
    summary = metrics.get("decision_curve") or {}
    for ax, scope in zip(axes[0], scopes, strict=True):
        x = table["threshold"].to_numpy(dtype=float)
        ax.plot(x, table[scope], lw=2, label="model")
        ax.plot(x, table[f"{scope}_treat_all"], color="C1", lw=1.2, label="treat all")
        ax.plot(x, table["treat_none"], color="grey", ls="--", lw=1, label="treat none")
        for first, last in (summary.get(scope) or {}).get("helps", []):
            ax.axvspan(first, last, color="C2", alpha=0.12)
        top = max(float(np.nanmax(table[scope])), float(np.nanmax(table[f"{scope}_treat_all"])))
        ax.set_ylim(-0.05, max(top, 0.05) * 1.1)
        ax.set(xlabel="threshold probability", ylabel="net benefit", title=scope)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Decision curve (test); shaded: thresholds where the model helps", y=1.02)
    return figure_png(fig, params["figure_dpi"])
