"""The ``inference`` parameter model: conf/base validates, bad values are named."""

import pytest

from breast_cancer_pipeline.param_schema import ParameterError, validate_block
from tests.params import base_params


@pytest.mark.parametrize("env", [None, "demo"])
def test_configured_block_validates(env):
    model = validate_block("inference", base_params("inference", env=env))
    assert model.batch_size == 32
    assert model.window_percentiles == (0.5, 99.5)


def test_decoding_follows_ingestion():
    """Served images are decoded with the limits training images were ingested with."""
    ingestion = base_params("ingestion")
    inference = base_params("inference")
    assert inference["max_pixels"] == ingestion["max_pixels"]
    assert inference["window_percentiles"] == ingestion["window_percentiles"]


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        ({"batch_size": 0}, "inference.batch_size = 0", "greater than 0"),
        ({"max_pixels": -1}, "inference.max_pixels = -1", "greater than 0"),
        ({"window_percentiles": [99.5, 0.5]}, "inference.window_percentiles", "low < high"),
        ({"window_percentiles": [0.5]}, "inference.window_percentiles.1", ""),
        ({"batch": 8}, "inference.batch: unknown key", ""),
    ],
)
def test_bad_values_are_named(overrides, key, message):
    with pytest.raises(ParameterError) as info:
        validate_block("inference", base_params("inference", **overrides))
    assert key in str(info.value)
    assert message in str(info.value)


def test_no_pixel_limit_is_allowed():
    assert validate_block("inference", base_params("inference", max_pixels=None)).max_pixels is None
