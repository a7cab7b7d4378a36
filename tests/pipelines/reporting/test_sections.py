"""The report's sections: what each says, from the blocks of ``metrics.json``."""

import pytest

from breast_cancer_pipeline.evaluation import calibration as cal
from breast_cancer_pipeline.pipelines.reporting.sections import temperature_interval_text


@pytest.mark.parametrize(
    ("low", "high", "said"),
    [
        (cal.TEMPERATURE_BOUNDS[0], 0.457, "lower end is the search's bound 0.05"),
        (2.0, cal.TEMPERATURE_BOUNDS[1], "upper end is the search's bound 20"),
        (0.3, 0.457, None),
    ],
)
def test_an_interval_end_on_the_search_bound_is_named_as_one(low, high, said):
    """A resample that separates perfectly drives T to the bound: the report says so."""
    text = temperature_interval_text(
        {"temperature_ci_low": low, "temperature_ci_high": high, "n_val": 69}, 0.95
    )
    assert text.startswith(f"95% interval over resamples of the 69 images: {low:.3f}-{high:.3f}")
    assert ("search's bound" in text) == (said is not None)
    if said:
        assert said in text and "not an estimate" in text
