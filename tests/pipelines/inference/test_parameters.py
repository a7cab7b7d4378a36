"""The ``inference`` parameter model: conf/base validates, bad values are named."""

import math

import pytest

from breast_cancer_pipeline.imaging import decode_cost
from breast_cancer_pipeline.param_schema import validate_block
from tests.params import base_params, refusal
from tests.payloads import zeros_png


@pytest.mark.parametrize("env", [None, "demo"])
def test_configured_block_validates(env):
    model = validate_block("inference", base_params("inference", env=env))
    assert model.batch_size == 32
    assert model.window_percentiles == (0.5, 99.5)


def test_decoding_follows_ingestion_but_the_pixel_limit_is_far_lower():
    """Served images are windowed as training images were; the pixel limit is serving's own."""
    ingestion = base_params("ingestion")
    inference = base_params("inference")
    assert inference["window_percentiles"] == ingestion["window_percentiles"]
    # Above the largest mammograms (FFDM 4,096 x 5,625), far below ingestion's limit.
    assert 4096 * 5625 < inference["max_pixels"] <= ingestion["max_pixels"] / 4


def test_serving_limits_of_conf_base():
    inference = validate_block("inference", base_params("inference"))
    serving = inference.serving
    assert inference.max_decoded_bytes <= serving.decode_memory_mb * 2**20
    assert serving.max_images >= 4  # a screening exam
    # An uncompressed 16-bit FFDM DICOM fits, as one image and in one request (base64).
    assert serving.max_image_bytes >= 4096 * 5625 * 2
    assert serving.max_request_bytes >= serving.max_image_bytes * 4 / 3
    assert (serving.ood.accept_rate, serving.ood.action) == (0.95, "flag")


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        ({"batch_size": 0}, "inference.batch_size = 0", "greater than 0"),
        ({"max_pixels": -1}, "inference.max_pixels = -1", "greater than 0"),
        ({"window_percentiles": [99.5, 0.5]}, "inference.window_percentiles", "low < high"),
        ({"window_percentiles": [0.5]}, "inference.window_percentiles.1", ""),
        ({"batch": 8}, "inference.batch: unknown key", ""),
        ({"serving": {"decode_memory_mb": 0}}, "serving.decode_memory_mb = 0", ""),
        ({"max_decoded_bytes": 0}, "inference.max_decoded_bytes = 0", "greater than 0"),
        (
            {"max_decoded_bytes": 2**30, "serving": {"decode_memory_mb": 512}},
            "inference",
            "max_decoded_bytes = 1073741824 is more than serving.decode_memory_mb = 512 MiB",
        ),
        ({"serving": {"max_images": -3}}, "inference.serving.max_images = -3", "greater than 0"),
        ({"serving": {"ood": {"accept_rate": 1.5}}}, "serving.ood.accept_rate = 1.5", "1"),
        ({"serving": {"ood": {"accept_rate": 0}}}, "serving.ood.accept_rate = 0", "than 0"),
        ({"serving": {"ood": {"action": "drop"}}}, "serving.ood.action", "'flag' or 'reject'"),
        (
            {"serving": {"conformal": {"alpha": 1.0}}},
            "serving.conformal.alpha = 1.0",
            "less than 1",
        ),
        ({"serving": {"runtime": "tensorrt"}}, "serving.runtime", "'onnxruntime'"),
        ({"export": {"parity_batch_size": 8}}, "export.parity_batch_size = 8", "must be odd"),
        ({"export": {"opset": 9}}, "inference.export.opset = 9", "13"),
        ({"export": {"tolerance": 0}}, "inference.export.tolerance = 0", "greater than 0"),
        (
            {"serving": {"max_image_bytes": 3000, "max_request_bytes": 3999}},
            "inference.serving",
            "max_image_bytes = 3,000 is 4,000 bytes once base64-encoded, more than "
            "max_request_bytes = 3,999",
        ),
    ],
)
def test_bad_values_are_named(overrides, key, message):
    text = refusal("inference", **overrides)
    assert key in text
    assert message in text


def test_no_pixel_limit_is_allowed():
    assert validate_block("inference", base_params("inference", max_pixels=None)).max_pixels is None


@pytest.mark.parametrize("colour_type", [0, 6], ids=["16-bit gray", "RGBA"])
def test_an_image_at_the_pixel_limit_fits_the_memory_limits(colour_type):
    """The memory limits do not refuse what the pixel limit lets through (PNG)."""
    inference = validate_block("inference", base_params("inference"))
    side = math.isqrt(inference.max_pixels)
    png = zeros_png(side, side, colour_type, 16 if colour_type == 0 else 8)
    cost = decode_cost(png, color_mode="grayscale").peak_bytes
    assert cost <= inference.max_decoded_bytes <= inference.serving.decode_memory_mb * 2**20
