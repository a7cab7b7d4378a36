"""The predictions table and the arrays read from it."""

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.evaluation.predictions import (
    as_arrays,
    binary_view,
    classifier_predictions,
    prediction_frame,
    with_probabilities,
)

NAMES = ["benign", "malignant", "normal"]
PROBA = np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]], dtype=np.float32)
MODEL_INPUT = {
    "class_names": np.array(NAMES),
    "x_test": np.zeros((2, 4, 4, 1), dtype=np.uint8),
    "y_test": np.array([1, 2]),
    "paths_test": np.array(["a.png", "b.png"]),
}


def test_prediction_frame_of_a_split():
    frame = prediction_frame(MODEL_INPUT, "test", PROBA)
    assert frame.columns.tolist() == ["path", "label", "predicted", *[f"p_{c}" for c in NAMES]]
    assert frame["path"].tolist() == ["a.png", "b.png"]
    assert frame["label"].tolist() == ["malignant", "normal"]
    assert frame["predicted"].tolist() == ["malignant", "benign"]
    assert frame["p_malignant"].tolist() == pytest.approx([0.7, 0.3])


class _Classifier:
    """Keras's ``predict`` signature, answering fixed probabilities; records its calls."""

    def __init__(self, proba):
        self.proba, self.calls = proba, []

    def predict(self, images, batch_size, verbose):
        self.calls.append((images.shape, batch_size, verbose))
        return self.proba


def test_classifier_predictions_are_one_forward_pass_of_the_split():
    classifier = _Classifier(PROBA)
    frame = classifier_predictions(classifier, MODEL_INPUT, "test", batch_size=5)
    assert classifier.calls == [((2, 4, 4, 1), 5, 0)]
    pd.testing.assert_frame_equal(frame, prediction_frame(MODEL_INPUT, "test", PROBA))


def test_the_arrays_follow_the_model_class_order_not_the_columns():
    frame = prediction_frame(MODEL_INPUT, "test", PROBA)
    shuffled = frame[["p_normal", "label", "p_benign", "path", "p_malignant"]]
    y, proba = as_arrays(shuffled, NAMES)
    assert y.tolist() == [1, 2]
    np.testing.assert_allclose(proba, PROBA, rtol=1e-6)
    is_positive, score = binary_view(frame, "normal")
    assert is_positive.tolist() == [False, True]
    assert score.tolist() == pytest.approx([0.1, 0.1])


def test_new_probabilities_replace_the_predicted_class_and_leave_the_input():
    frame = prediction_frame(MODEL_INPUT, "test", PROBA)
    flipped = with_probabilities(frame, PROBA[:, ::-1], NAMES)
    assert flipped["predicted"].tolist() == ["malignant", "normal"]
    assert flipped["p_normal"].tolist() == pytest.approx([0.2, 0.6])
    assert flipped.columns.tolist() == frame.columns.tolist()
    assert frame["predicted"].tolist() == ["malignant", "benign"]  # a copy


def test_tiles_are_combined_into_image_rows_by_the_spec_rule():
    """Three tiles of image a, one of image b: ``max`` takes a's most malignant tile."""
    from breast_cancer_pipeline.tiles import TileSpec, spec_arrays

    tiles = {
        "class_names": np.array(["benign", "malignant"]),
        **spec_arrays(TileSpec(size=4, stride=4, aggregation="max")),
        "x_test": np.zeros((4, 4, 4, 1), dtype=np.uint8),
        "y_test": np.array([1, 1, 1, 0]),  # the tiles' labels
        "tile_image_test": np.array([0, 0, 0, 1]),
        "paths_test": np.array(["a.png", "b.png"]),
        "image_y_test": np.array([1, 0]),
    }
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])
    classifier = _Classifier(proba)
    frame = classifier_predictions(classifier, tiles, "test", 8, positive_class="malignant")
    assert classifier.calls == [((4, 4, 4, 1), 8, 0)]
    assert frame["path"].tolist() == ["a.png", "b.png"]
    assert frame["label"].tolist() == ["malignant", "benign"]
    assert frame["p_malignant"].tolist() == pytest.approx([0.8, 0.4])
    assert frame["predicted"].tolist() == ["malignant", "benign"]
