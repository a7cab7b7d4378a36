"""The reporting figures, decoded: size, not blank, and the planted structure where it shows."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breast_cancer_pipeline.pipelines.reporting.figures import (
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
from tests.params import base_params

NAMES = ["benign", "malignant", "normal"]
META = {"class_names": NAMES, "backbone": "small_cnn"}
PARAMS = base_params(
    "reporting", figure_dpi=50, bootstrap={"n_resamples": 50}, gallery={"n_errors": 4}
)
POINT = {"threshold": 0.4, "rule": "youden", "positive_class": "malignant"}
DARK_BLUE = (8, 48, 107)  # Blues at 1.0: a confusion-matrix cell holding 100% of its row
CRIMSON = (220, 20, 60)  # the operating point
C0, C1 = (31, 119, 180), (255, 127, 14)  # matplotlib's first two line colours


def _decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.std() > 10, "blank figure"
    return pixels


def _mask(pixels: np.ndarray, colour: tuple[int, int, int], tol: int = 12) -> np.ndarray:
    return (np.abs(pixels - np.array(colour)) <= tol).all(axis=-1)


def _frame(y, predicted, proba=None):
    n = len(y)
    if proba is None:
        proba = np.full((n, 3), 0.1)
        proba[np.arange(n), predicted] = 0.8
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(n)]})
    frame["label"] = [NAMES[i] for i in y]
    frame["predicted"] = [NAMES[i] for i in predicted]
    for k, name in enumerate(NAMES):
        frame[f"p_{name}"] = proba[:, k]
    return frame


def _dark_cells(pixels: np.ndarray) -> np.ndarray:
    """3 x 3 booleans: which cells of the matrix are mostly dark blue."""
    dark = _mask(pixels, DARK_BLUE, tol=30)
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    box = dark[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = box.shape
    return np.array(
        [
            [
                box[i * h // 3 : (i + 1) * h // 3, j * w // 3 : (j + 1) * w // 3].mean() > 0.5
                for j in range(3)
            ]
            for i in range(3)
        ]
    )


def test_confusion_matrix_shows_the_planted_confusion():
    y = np.repeat([0, 1, 2], 10)
    perfect = _decode(plot_confusion_matrix(_frame(y, y), META, PARAMS))
    assert (_dark_cells(perfect) == np.eye(3, dtype=bool)).all()
    # every image called benign: the first column is full, the matrix box one cell wide
    all_benign = _decode(plot_confusion_matrix(_frame(y, np.zeros(30, int)), META, PARAMS))
    dark = _mask(all_benign, DARK_BLUE, tol=30)
    width = np.ptp(np.flatnonzero(dark.any(axis=0)))
    height = np.ptp(np.flatnonzero(dark.any(axis=1)))
    assert height > 2.5 * width


def _planted_metrics():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    logits = rng.normal(size=(60, 3)) + 2.0 * np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = _frame(y, proba.argmax(axis=1), proba)
    metrics, _, bins = compute_metrics(frame, META, POINT, PARAMS)
    return frame, metrics, bins


def test_roc_pr_figure_has_two_panels_with_curves_and_the_operating_point():
    frame, metrics, _ = _planted_metrics()
    roc, pr = curve_tables(frame, META, PARAMS)
    pixels = _decode(plot_roc_pr(roc, pr, metrics, PARAMS))
    height, width = pixels.shape[:2]
    assert width == pytest.approx(2.1 * height, rel=0.25)  # figsize 10 x 4.6
    left, right = pixels[:, : width // 2], pixels[:, width // 2 :]
    for panel in (left, right):
        assert _mask(panel, C0).sum() > 50  # the curve
        assert _mask(panel, CRIMSON).sum() > 5  # the operating point


def test_reliability_figure_is_two_stacked_panels():
    _, metrics, bins = _planted_metrics()
    pixels = _decode(plot_reliability(bins, metrics, PARAMS))
    height, width = pixels.shape[:2]
    assert height > width  # figsize 5 x 5.5: diagram above, counts below
    steelblue = _mask(pixels, (70, 130, 180), tol=3)  # the count bars (solid fill)
    rows = np.flatnonzero(steelblue.sum(axis=1) > 15)  # wide filled bars, not a thin line
    assert rows.size > 10 and rows.min() > 0.6 * height  # bars only in the lower panel
    assert _mask(pixels[: height // 2], C0).sum() > 50  # the model's reliability curve


def test_learning_curves_show_training_and_validation_in_both_panels():
    history = {
        "phase1": {
            "loss": [1.0, 0.7],
            "val_loss": [1.1, 0.9],
            "auc": [0.6, 0.7],
            "val_auc": [0.55, 0.65],
            "epoch": [0, 1],
        },
        "phase2": {
            "loss": [0.5, 0.4],
            "val_loss": [0.8, 0.7],
            "auc": [0.8, 0.85],
            "val_auc": [0.7, 0.72],
            "epoch": [2, 3],
        },
    }
    pixels = _decode(plot_learning_curves(learning_curve_table(history), PARAMS))
    width = pixels.shape[1]
    for panel in (pixels[:, : width // 2], pixels[:, width // 2 :]):
        assert _mask(panel, C0, tol=40).sum() > 20  # training
        assert _mask(panel, C1, tol=40).sum() > 20  # validation (dashed)


def test_confident_errors_gallery_shows_the_error_images():
    # 4 errors whose images are black squares, 26 correct ones: the gallery holds 4 black tiles
    y = np.repeat([0, 1, 2], 10)
    predicted = y.copy()
    predicted[[0, 10, 20, 21]] = [1, 2, 0, 0]
    frame = _frame(y, predicted)
    x = np.full((30, 16, 16, 1), 200, np.uint8)
    x[[0, 10, 20, 21]] = 0
    model_input = {"x_test": x, "paths_test": frame["path"].to_numpy()}
    pixels = _decode(plot_confident_errors(frame, model_input, PARAMS))
    black = _mask(pixels, (0, 0, 0), tol=5)
    columns = np.flatnonzero(black.sum(axis=0) > 10)
    tiles = 1 + int((np.diff(columns) > 1).sum())  # runs of black columns
    assert tiles == 4
    no_error = _decode(plot_confident_errors(_frame(y, y), model_input, PARAMS))
    assert _mask(no_error, (0, 0, 0), tol=5).sum() < black.sum() / 5
