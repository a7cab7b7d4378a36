"""Reporting: the out-of-distribution score shipped with the served model, and how it does.

:func:`fit_ood_score` takes the classifier's penultimate features of the training split (the
same compiled forward pass the server runs,
:func:`breast_cancer_pipeline.serving.compiled_forward`), fits the served score
(:data:`~breast_cancer_pipeline.evaluation.ood.METHOD`), scores the validation split (whose
``inference.serving.ood.accept_rate`` quantile is the threshold), the test split and a
synthetic out-of-distribution set (:func:`~breast_cancer_pipeline.evaluation.ood.ood_images`).
The energy score is computed on the same features for comparison. :func:`ood_summary` turns
the scores into the ``ood`` block of ``metrics.json``; :func:`plot_ood_scores` draws them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.evaluation.ood import KINDS, METHOD, OodScore, fit_ood, ood_images
from breast_cancer_pipeline.plotting import figure_png, pyplot

logger = logging.getLogger(__name__)

#: The sets of the score table, in plot order (``ood``: the synthetic out-of-distribution set).
SETS = ("train", "val", "test", "ood")


def _features(forward: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    out = [
        np.asarray(forward(images[i : i + batch_size])[0])
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def fit_ood_score(
    classifier: Any, model_input: dict[str, np.ndarray], params: dict, ood_settings: dict
) -> tuple[OodScore, pd.DataFrame]:
    """Fit the served out-of-distribution score and score every split and the OOD set.

    Args:
        classifier: The trained Keras classifier (ends with its ``Dense`` layer).
        model_input: The model input arrays (``x_<split>``, ``y_train``).
        params: The ``reporting`` parameters (``batch_size``, ``ood_images``).
        ood_settings: ``inference.serving.ood`` (``accept_rate`` sets the threshold).

    Returns:
        ``(score, table)``: the fitted :class:`~breast_cancer_pipeline.evaluation.ood.OodScore`
        (packaged with the served model), and one row per image of the train, val, test and
        OOD sets: ``set``, ``kind`` (the OOD kind; the class for the splits), ``score``,
        ``in_distribution`` and ``energy_score`` (the comparison).

    Raises:
        ValueError: The classifier does not end with a ``Dense`` layer.
    """
    from breast_cancer_pipeline.serving import compiled_forward, penultimate_layer

    started = time.perf_counter()
    forward = compiled_forward(classifier)
    x_train = np.asarray(model_input["x_train"])
    size, channels = x_train.shape[1], x_train.shape[3]
    settings = params["ood_images"]
    ood, kinds = ood_images(settings["per_kind"], size, channels, settings["seed"])
    class_names = [str(c) for c in model_input["class_names"]]
    features, kind_of = {}, {}
    for name in SETS[:3]:
        features[name] = _features(
            forward, np.asarray(model_input[f"x_{name}"]), params["batch_size"]
        )
        kind_of[name] = [class_names[i] for i in np.asarray(model_input[f"y_{name}"])]
    features["ood"], kind_of["ood"] = _features(forward, ood, params["batch_size"]), list(kinds)
    y_train = np.asarray(model_input["y_train"])
    score = fit_ood(METHOD, features["train"], y_train, features["val"])
    kernel, bias = (
        np.asarray(w, dtype=np.float64) for w in penultimate_layer(classifier).get_weights()
    )
    energy = fit_ood("energy", features["train"], y_train, features["val"], (kernel, bias))
    threshold = score.threshold(ood_settings["accept_rate"])
    frames = []
    for name in SETS:
        values = score.score(features[name])
        frames.append(
            pd.DataFrame(
                {
                    "set": name,
                    "kind": kind_of[name],
                    "score": values,
                    "in_distribution": values <= threshold,
                    "energy_score": energy.score(features[name]),
                }
            )
        )
    logger.info(
        "Out-of-distribution score (%s) fitted on %d training images, threshold %.4g; "
        "%d images scored in %.1f s",
        METHOD,
        len(x_train),
        threshold,
        sum(len(f) for f in frames),
        time.perf_counter() - started,
    )
    return score, pd.concat(frames, ignore_index=True)


def _rates(table: pd.DataFrame, column: str, threshold: float) -> dict[str, Any]:
    """Acceptance of the splits and detection of the OOD set (overall and per kind)."""
    inside = table[column] <= threshold
    ood = table["set"] == "ood"
    return {
        "val_acceptance": float(inside[table["set"] == "val"].mean()),
        "test_acceptance": float(inside[table["set"] == "test"].mean()),
        "ood_detection_rate": float((~inside[ood]).mean()),
        "ood_detection_rate_per_kind": {
            kind: float((~inside[ood & (table["kind"] == kind)]).mean())
            for kind in KINDS
            if (ood & (table["kind"] == kind)).any()
        },
    }


def ood_summary(
    score: OodScore, table: pd.DataFrame, ood_settings: dict
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The ``ood`` block of ``metrics.json`` and its MLflow figures.

    Args:
        score: The fitted score (its validation scores give the threshold).
        table: The score table of :func:`fit_ood_score`.
        ood_settings: ``inference.serving.ood``.

    Returns:
        ``(block, mlflow_metrics)``: ``method``, ``accept_rate``, ``threshold``, the
        acceptance of validation and test, the OOD set's detection rate (overall and per
        kind), its size, and the same rates for the energy score at its own validation
        threshold (``comparison.energy``); the numeric figures as ``ood.<name>``.
    """
    rate = float(ood_settings["accept_rate"])
    threshold = score.threshold(rate)
    energy_val = table.loc[table["set"] == "val", "energy_score"].to_numpy(dtype=float)
    energy_threshold = OodScore("energy", np.sort(energy_val)).threshold(rate)
    block = {
        "method": score.method,
        "accept_rate": rate,
        "action": ood_settings["action"],
        "threshold": threshold,
        **_rates(table, "score", threshold),
        "n_ood": int((table["set"] == "ood").sum()),
        "comparison": {
            "energy": {
                "threshold": energy_threshold,
                **_rates(table, "energy_score", energy_threshold),
            }
        },
    }
    logger.info(
        "Out-of-distribution check: %.1f%% of test images accepted, %.1f%% of %d OOD images "
        "flagged (energy score: %.1f%%, %.1f%%)",
        100 * block["test_acceptance"],
        100 * block["ood_detection_rate"],
        block["n_ood"],
        100 * block["comparison"]["energy"]["test_acceptance"],
        100 * block["comparison"]["energy"]["ood_detection_rate"],
    )
    numeric = {k: v for k, v in block.items() if isinstance(v, float)}
    numeric.update(
        {f"ood_detection_rate_{k}": v for k, v in block["ood_detection_rate_per_kind"].items()}
    )
    return block, {f"ood.{k}": {"value": float(v), "step": 0} for k, v in numeric.items()}


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
