"""The ``reporting`` parameter model: conf/base and demo validate, bad values are named."""

import re

import pytest

from breast_cancer_pipeline.param_schema import ParameterError, validate_block
from breast_cancer_pipeline.pipelines.reporting.parameters import check_positive_class
from tests.params import base_params


def _check(**overrides):
    return validate_block("reporting", base_params("reporting", **overrides))


@pytest.mark.parametrize("env", [None, "demo"])
def test_configured_blocks_validate(env):
    model = validate_block("reporting", base_params("reporting", env=env))
    assert model.positive_class == "malignant"
    assert model.bootstrap.n_resamples == 1000


@pytest.mark.parametrize("threshold", ["youden", 0.95, 1, 1.0, 0.01])
def test_threshold_rules(threshold):
    assert _check(threshold=threshold).threshold == threshold


RULE = "a target sensitivity in (0, 1] such as 0.95, or 'youden'"


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        ({"threshold": 0}, "reporting.threshold = 0", RULE),
        ({"threshold": 1.5}, "reporting.threshold = 1.5", RULE),
        ({"threshold": "best"}, "reporting.threshold = 'best'", RULE),
        ({"threshold": True}, "reporting.threshold = True", RULE),
        ({"threshold": None}, "reporting.threshold = None", RULE),
        ({"positive_class": ""}, "reporting.positive_class = ''", "at least 1 character"),
        ({"batch_size": 0}, "reporting.batch_size = 0", "greater than 0"),
        (
            {"bootstrap": {"n_resamples": 0}},
            "reporting.bootstrap.n_resamples = 0",
            "greater than 0",
        ),
        ({"bootstrap": {"confidence": 1.0}}, "reporting.bootstrap.confidence = 1.0", "less than 1"),
        ({"bootstrap": {"confidence": 0}}, "reporting.bootstrap.confidence = 0", "greater than 0"),
        ({"bootstrap": {"seed": -1}}, "reporting.bootstrap.seed = -1", "greater than or equal"),
        ({"calibration_bins": 1}, "reporting.calibration_bins = 1", "greater than or equal to 2"),
        ({"ece_warning": -0.1}, "reporting.ece_warning = -0.1", "greater than or equal to 0"),
        ({"gallery": {"n_errors": 0}}, "reporting.gallery.n_errors = 0", "greater than 0"),
        ({"gradcam": {"per_class": 0}}, "reporting.gradcam.per_class = 0", "greater than 0"),
        ({"gradcam": {"alpha": 1.5}}, "reporting.gradcam.alpha = 1.5", "less than or equal to 1"),
        ({"ood_images": {"per_kind": 0}}, "reporting.ood_images.per_kind = 0", "greater than 0"),
        ({"ood_images": {"seed": -1}}, "reporting.ood_images.seed = -1", "greater than or equal"),
        ({"figure_dpi": 0}, "reporting.figure_dpi = 0", "greater than 0"),
        ({"thresold": 0.9}, "reporting.thresold: unknown key", ""),
    ],
)
def test_bad_values_are_named(overrides, key, message):
    with pytest.raises(ParameterError, match=re.escape(key)) as caught:
        _check(**overrides)
    assert message in str(caught.value)


def test_missing_key_is_named():
    block = base_params("reporting")
    del block["bootstrap"]["seed"]
    with pytest.raises(ParameterError, match=r"reporting\.bootstrap\.seed: missing"):
        validate_block("reporting", block)


def test_the_positive_class_must_be_a_class_of_the_model():
    check_positive_class("malignant", ["benign", "malignant"])
    message = "reporting.positive_class='cancer' is not a class of the model (benign, malignant)"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_positive_class("cancer", ["benign", "malignant"])
