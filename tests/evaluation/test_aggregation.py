"""The one rule that makes several probability rows into one (levels, served keys, tiles)."""

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.evaluation.aggregation import (
    AGGREGATIONS,
    N_ROWS_COLUMN,
    aggregate,
    aggregate_by_key,
)

# Two images of one breast, [benign, malignant]: one view sees the lesion.
VIEWS = np.array([[0.9, 0.1], [0.3, 0.7]])


@pytest.mark.parametrize(
    ("method", "expected_malignant"),
    [("mean", 0.4), ("max", 0.7), ("noisy_or", 1 - 0.9 * 0.3), ("top_k_mean", 0.4)],
)
def test_each_rule_gives_the_positive_class_its_value(method, expected_malignant):
    row = aggregate(VIEWS, method, positive=1, top_k=2)
    assert row[1] == pytest.approx(expected_malignant)
    assert row.sum() == pytest.approx(1.0)


def test_top_k_mean_averages_the_k_highest_rows():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.95, 0.05]])
    assert aggregate(proba, "top_k_mean", positive=1, top_k=2)[1] == pytest.approx(0.7)


def test_other_classes_share_the_rest_in_proportion_to_their_mean():
    proba = np.array([[0.6, 0.2, 0.2], [0.2, 0.2, 0.6]])  # normal, benign, malignant
    row = aggregate(proba, "max", positive=2)
    assert row[2] == pytest.approx(0.6)
    assert row[0] / row[1] == pytest.approx(0.4 / 0.2)
    assert row.sum() == pytest.approx(1.0)


def test_without_a_positive_class_every_class_is_aggregated_and_renormalised():
    row = aggregate(VIEWS, "max")
    assert row == pytest.approx(np.array([0.9, 0.7]) / 1.6)


@pytest.mark.parametrize("method", AGGREGATIONS)
def test_one_row_is_returned_as_it_is(method):
    assert aggregate(VIEWS[:1], method, positive=1) == pytest.approx(VIEWS[0])


def test_unknown_rule_and_empty_input_are_refused():
    with pytest.raises(ValueError, match="unknown aggregation 'median'"):
        aggregate(VIEWS, "median")
    with pytest.raises(ValueError, match="n >= 1"):
        aggregate(np.empty((0, 2)), "mean")


def test_rows_are_grouped_by_their_key_and_counted():
    frame = pd.DataFrame(
        {
            "group": ["P1", "P1", "P1", "P2", "P3"],
            "laterality": ["L", "L", "R", "L", ""],
            "p_benign": [0.9, 0.3, 0.5, 0.2, 0.5],
            "p_malignant": [0.1, 0.7, 0.5, 0.8, 0.5],
        }
    )
    breasts = aggregate_by_key(
        frame, ["group", "laterality"], ["p_benign", "p_malignant"], "max", positive=1
    )
    assert breasts[["group", "laterality"]].values.tolist() == [
        ["P1", "L"],
        ["P1", "R"],
        ["P2", "L"],
    ]
    assert breasts[N_ROWS_COLUMN].tolist() == [2, 1, 1]
    assert breasts["p_malignant"].tolist() == pytest.approx([0.7, 0.5, 0.8])


def test_a_missing_key_column_is_named():
    with pytest.raises(KeyError, match="laterality"):
        aggregate_by_key(pd.DataFrame({"p_a": [1.0]}), ["laterality"], ["p_a"], "mean")
