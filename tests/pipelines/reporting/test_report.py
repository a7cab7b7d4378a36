import base64
import re

import numpy as np
import pandas as pd

from breast_cancer_pipeline.pipelines.reporting.figures import (
    confident_errors,
    plot_confident_errors,
    plot_confusion_matrix,
    plot_learning_curves,
    plot_reliability,
    plot_roc_pr,
)
from breast_cancer_pipeline.pipelines.reporting.nodes import (
    compute_metrics,
    curve_tables,
    learning_curve_table,
)
from breast_cancer_pipeline.pipelines.reporting.report import FIGURES, data_summary, render_report

NAMES = ["benign", "malignant"]
META = {"class_names": NAMES, "backbone": "small_cnn", "image_size": 8, "color_mode": "grayscale"}
PARAMS = {
    "positive_class": "malignant",
    "bootstrap": {"n_resamples": 50, "confidence": 0.95, "seed": 0},
    "calibration_bins": 5,
    "ece_warning": 0.1,
    "gallery": {"n_errors": 2},
    "figure_dpi": 40,
}
PNG = b"\x89PNG\r\n\x1a\n"


def _predictions():
    pm = np.array([0.95, 0.7, 0.4, 0.2, 0.9, 0.6, 0.3, 0.1])
    labels = ["malignant"] * 4 + ["benign"] * 4
    frame = pd.DataFrame({"path": [f"img{i}.png" for i in range(8)], "label": labels})
    frame["predicted"] = np.where(pm >= 0.5, "malignant", "benign")
    frame["p_benign"], frame["p_malignant"] = 1 - pm, pm
    return frame


def _manifest():
    return pd.DataFrame(
        {
            "label": ["benign", "malignant"] * 6,
            "split": ["train"] * 6 + ["val"] * 2 + ["test"] * 4,
            "group": ["p1", "p1", "p2", "p2", "p3", "p3", "p4", "p4", "p5", "p6", "p7", "p8"],
        }
    )


def test_confident_errors_order():
    errors = confident_errors(_predictions(), 5)
    # benign called malignant at 0.9 and 0.6, malignant called benign at 1 - 0.4, 1 - 0.2
    assert errors["path"].tolist() == ["img4.png", "img3.png", "img2.png", "img5.png"]
    assert errors["confidence"].tolist()[:2] == [0.9, 0.8]


def test_data_summary_counts_images_and_patients():
    summary = data_summary(_manifest())
    assert summary.loc["benign", "train"] == 3
    assert summary.loc["total", "test"] == 4
    assert summary.loc["patients", "train"] == 3
    assert summary.loc["patients", "all"] == 8


def test_figures_and_self_contained_report():
    predictions = _predictions()
    point = {
        "threshold": 0.5,
        "rule": "youden",
        "positive_class": "malignant",
        "val_sensitivity": 1.0,
        "val_specificity": 0.5,
        "n_val": 4,
    }
    metrics, _, bins = compute_metrics(predictions, META, point, PARAMS)
    roc, pr = curve_tables(predictions, META, PARAMS)
    history = {"phase1": {"loss": [1.0, 0.7], "val_loss": [1.1, 0.9], "epoch": [0, 1]}}
    x = np.zeros((8, 8, 8, 1), dtype=np.uint8)
    model_input = {"x_test": x, "paths_test": predictions["path"].to_numpy()}
    figures = {
        "confusion_matrix": plot_confusion_matrix(predictions, META, PARAMS),
        "roc_pr": plot_roc_pr(roc, pr, metrics, PARAMS),
        "reliability": plot_reliability(bins, metrics, PARAMS),
        "learning_curves": plot_learning_curves(learning_curve_table(history), PARAMS),
        "confident_errors": plot_confident_errors(predictions, model_input, PARAMS),
        "gradcam": lambda: PNG + b"fake",  # figures may come as lazy loaders
    }
    assert all(f.startswith(PNG) for f in list(figures.values())[:-1])
    html, card = render_report(metrics, point, META, _manifest(), predictions, PARAMS, **figures)
    embedded = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(embedded) == len(FIGURES)
    assert base64.b64decode(embedded[0]).startswith(PNG)
    assert not re.search(r"(src|href)=['\"](?!data:)", html)  # nothing to fetch
    assert "Research use only" in html and "Not a diagnostic device" in html
    assert f"{metrics['auroc']:.3f} [{metrics['auroc_ci_low']:.3f}" in html
    assert "<code>img4.png</code>" in html  # the most confident error is a failure case
    for section in ("Intended use and limits", "Data and splits", "Calibration", "Known failure"):
        assert f"## {section}" in card
    assert "| patients | 3 | 1 | 4 | 8 |" in card
