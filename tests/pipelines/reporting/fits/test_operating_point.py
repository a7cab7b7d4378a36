"""The operating threshold chosen on the held-out predictions."""

import pytest

from breast_cancer_pipeline.pipelines.reporting.fits.operating_point import choose_operating_point
from tests.pipelines.reporting.test_nodes import META, PARAMS, _val


@pytest.mark.parametrize(
    ("rule", "threshold", "sensitivity", "specificity", "text"),
    [
        (0.75, 0.6, 0.75, 2 / 3, "sensitivity>=0.75"),  # highest keeping 3 of 4 positives
        (0.5, 0.8, 0.5, 1.0, "sensitivity>=0.5"),
        (1, 0.3, 1.0, 2 / 3, "sensitivity>=1"),
        ("youden", 0.3, 1.0, 2 / 3, "youden"),  # J: 0.5 at 0.8, 0.417 at 0.6, 0.667 at 0.3
    ],
)
def test_operating_point_on_validation(rule, threshold, sensitivity, specificity, text):
    point = choose_operating_point(_val(), META, {**PARAMS, "threshold": rule})
    assert point == {
        "positive_class": "malignant",
        "rule": text,
        "threshold": pytest.approx(threshold),
        "val_sensitivity": pytest.approx(sensitivity),
        "val_specificity": pytest.approx(specificity),
        "n_val": 7,
    }


def test_operating_point_needs_both_groups_and_a_known_class():
    only_benign = _val().assign(label="benign")
    with pytest.raises(ValueError, match="needs images of 'malignant'"):
        choose_operating_point(only_benign, META, PARAMS)
    with pytest.raises(ValueError, match="reporting.positive_class='cancer'"):
        choose_operating_point(_val(), META, {**PARAMS, "positive_class": "cancer"})
