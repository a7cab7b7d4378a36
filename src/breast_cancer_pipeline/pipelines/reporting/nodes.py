"""Reporting: the classifier's figures on the held-out test split."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.pipelines.backbone_selection.nodes import auroc

logger = logging.getLogger(__name__)


def predict_test_split(
    classifier: Any, model_input: dict[str, np.ndarray], params: dict
) -> pd.DataFrame:
    """Class probabilities for every test image.

    Returns:
        One row per image: ``path``, ``label``, ``predicted`` and ``p_<class>`` columns.
    """
    class_names = [str(c) for c in model_input["class_names"]]
    proba = classifier.predict(
        np.asarray(model_input["x_test"]), batch_size=params["batch_size"], verbose=0
    )
    y = np.asarray(model_input["y_test"])
    frame = pd.DataFrame(
        {
            "path": np.asarray(model_input["paths_test"]),
            "label": [class_names[i] for i in y],
            "predicted": [class_names[i] for i in proba.argmax(axis=1)],
        }
    )
    for i, name in enumerate(class_names):
        frame[f"p_{name}"] = proba[:, i]
    return frame


def compute_metrics(
    predictions: pd.DataFrame, metadata: dict[str, Any], params: dict
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Accuracy, AUROC, and sensitivity/specificity of the positive class vs the rest.

    Returns:
        ``(metrics, mlflow_metrics)``: the DVC metrics file content and the same figures in
        kedro-mlflow's metric format.

    Raises:
        ValueError: ``reporting.positive_class`` is not one of the model's classes.
    """
    class_names = metadata["class_names"]
    positive = params["positive_class"]
    if positive not in class_names:
        raise ValueError(
            f"reporting.positive_class={positive!r} is not a class of the model "
            f"({', '.join(class_names)})"
        )
    y = predictions["label"].map(class_names.index).to_numpy()
    proba = predictions[[f"p_{c}" for c in class_names]].to_numpy()
    is_pos = predictions["label"] == positive
    called_pos = predictions["predicted"] == positive
    tp, fn = int((is_pos & called_pos).sum()), int((is_pos & ~called_pos).sum())
    tn, fp = int((~is_pos & ~called_pos).sum()), int((~is_pos & called_pos).sum())
    metrics = {
        "n_test": len(predictions),
        "accuracy": float(np.mean(y == proba.argmax(axis=1))),
        "auroc": auroc(y, proba),
        "positive_class": positive,
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "backbone": metadata["backbone"],
    }
    logger.info(
        "Test: accuracy %.3f, AUROC %.3f, sensitivity %.3f, specificity %.3f (%s vs rest)",
        metrics["accuracy"],
        metrics["auroc"],
        metrics["sensitivity"],
        metrics["specificity"],
        positive,
    )
    mlflow_metrics = {
        f"test.{k}": {"value": float(v), "step": 0}
        for k, v in metrics.items()
        if isinstance(v, int | float)
    }
    return metrics, mlflow_metrics


def plot_confusion_matrix(predictions: pd.DataFrame, metadata: dict[str, Any]) -> Any:
    """The test confusion matrix as a matplotlib figure (counts and row percentages)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from sklearn.metrics import confusion_matrix  # noqa: PLC0415

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
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Test confusion matrix (n={len(predictions)})")
    fig.tight_layout()
    return fig
