"""A request's rows that share a key get the level's answer: planted probabilities, the
answer worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.serving.levels import (
    check_levels,
    key_columns,
    level_columns,
    level_tables,
    thresholded_classes,
)
from tests.serving._served import LEVEL_OPERATING_POINTS

CLASSES = ["benign", "malignant", "normal"]
LEVELS = check_levels(LEVEL_OPERATING_POINTS, "malignant")


def _rows() -> pd.DataFrame:
    """Six answered rows: patient p1 (two breasts, one row failed), patient 7 (given as an
    int and as text), and a row without a key."""
    p = [
        [0.5, 0.3, 0.2],
        [0.1, 0.8, 0.1],
        [None, None, None],
        [0.2, 0.4, 0.4],
        [0.45, 0.4, 0.15],
        [0.1, 0.9, 0.0],
    ]
    frame = pd.DataFrame(p, columns=[f"p_{c}" for c in CLASSES], dtype=object)
    frame.insert(0, "group", ["p1", "p1", "p1", 7, "7", ""])
    frame.insert(1, "laterality", ["L", "R", "L", "L", "L", "R"])
    frame["error"] = ["", "", "cannot decode 'c'", "", "", ""]
    return frame


def test_each_level_is_combined_over_the_scored_rows_and_decided_at_its_own_threshold():
    tables = level_tables(_rows(), LEVELS, CLASSES)

    assert list(tables) == ["patient", "breast"]  # no `study` column: no exam answer
    patient = tables["patient"].set_index("group")
    assert patient.columns.tolist() == [*(f"p_{c}" for c in CLASSES), "label", "n_images"]
    # p1: the mean of its two scored rows (the failed one does not count).
    np.testing.assert_allclose(patient.loc["p1", ["p_benign", "p_malignant"]], [0.3, 0.55])
    assert patient.loc["p1", "label"] == "malignant" and patient.loc["p1", "n_images"] == 2
    # 7 and "7" are one patient; p(malignant) 0.4 is under the patient threshold 0.41 (an
    # image at 0.4 would be malignant at the image threshold): the most probable other class.
    assert patient.loc["7", "p_malignant"] == pytest.approx(0.4)
    assert patient.loc["7", "label"] == "benign" and patient.loc["7", "n_images"] == 2
    assert "" not in patient.index  # a row without a key answers no level
    breast = tables["breast"].set_index(["group", "laterality"])
    assert breast.loc[("p1", "L"), "label"] == "benign"  # 0.3 < 0.37
    assert breast.loc[("p1", "R"), "label"] == "malignant"
    assert breast["n_images"].tolist() == [1, 1, 2]


def test_the_aggregation_rule_of_the_levels_is_applied():
    noisy_or = check_levels({**LEVEL_OPERATING_POINTS, "aggregation": "noisy_or"}, "malignant")
    patient = level_tables(_rows(), noisy_or, CLASSES)["patient"].set_index("group")
    assert patient.loc["7", "p_malignant"] == pytest.approx(1 - 0.6 * 0.6)
    assert patient.loc["7", "label"] == "malignant"


def test_each_row_gets_its_keys_answer_and_failed_or_keyless_rows_get_nulls():
    rows = _rows()
    columns = level_columns(rows, LEVELS, CLASSES)

    assert list(columns) == [
        *(f"patient_{c}" for c in ("p_benign", "p_malignant", "p_normal", "label", "n_images")),
        *(f"breast_{c}" for c in ("p_benign", "p_malignant", "p_normal", "label", "n_images")),
    ]
    assert columns["patient_label"] == ["malignant", "malignant", None, "benign", "benign", None]
    assert columns["patient_n_images"] == [2, 2, None, 2, 2, None]
    # Patient 7's one breast: the same p(malignant) 0.4, over the breast threshold 0.37.
    assert columns["breast_label"] == ["benign", "malignant", None, "malignant", "malignant", None]
    assert all(type(v) is float for v in columns["patient_p_malignant"] if v is not None)
    assert level_columns(rows, None, CLASSES) == {}  # a model packaged without levels
    assert level_columns(rows.drop(columns="group"), LEVELS, CLASSES) == {}
    assert key_columns(rows.assign(study="s", other=1), LEVELS) == ["group", "laterality", "study"]


def test_the_decision_is_the_images_rule():
    proba = np.array([[0.5, 0.3, 0.2], [0.1, 0.25, 0.65], [0.7, 0.2, 0.1]])
    assert thresholded_classes(proba, 1, 0.25).tolist() == [1, 1, 0]
    assert thresholded_classes(proba, 1, 0.9).tolist() == [0, 2, 0]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"aggregation": "median"}, "evaluation.level_aggregation"),
        ({"positive_class": "benign"}, "is not the model's 'malignant'"),
        ({"levels": {"patient": {"columns": ["group"], "threshold": 1.5}}}, "within \\[0, 1\\]"),
        ({"levels": {"patient": {"columns": [], "threshold": 0.5}}}, "needs columns"),
    ],
)
def test_bad_operating_points_are_refused_naming_the_problem(change, words):
    with pytest.raises(ValueError, match=words):
        check_levels({**LEVEL_OPERATING_POINTS, **change}, "malignant")
    assert check_levels(None, "malignant") is None
    with pytest.raises(ValueError, match="lack \\['aggregation'\\]"):
        check_levels({"positive_class": "malignant", "levels": {}}, "malignant")
