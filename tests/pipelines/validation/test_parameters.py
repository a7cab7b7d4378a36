import pytest

from breast_cancer_pipeline.param_schema import ParameterError, validate_block
from breast_cancer_pipeline.pipelines.validation.expectations import SPECS
from breast_cancer_pipeline.pipelines.validation.parameters import ValidationParams
from tests.params import base_params, refusal


@pytest.mark.parametrize("env", [None, "demo"])
def test_the_configured_blocks_validate(env):
    params = validate_block("validation", base_params("validation", env=env))
    assert isinstance(params, ValidationParams)
    assert set(params.severity.model_dump()) == set(SPECS)


def test_conf_base_values_arrive_typed():
    params = validate_block("validation", base_params("validation"))
    assert params.min_per_class == 10
    assert params.split_tolerance == 0.05
    assert params.severity.class_imbalance == "warning"
    assert params.severity.sha256_in_one_split == "error"


def _severity(**changes):
    return {**base_params("validation")["severity"], **changes}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"severity": _severity(path_unique="fatal")}, "validation.severity.path_unique = 'fatal'"),
        (
            {"severity": _severity(no_such_check="error")},
            "validation.severity.no_such_check: unknown",
        ),
        ({"min_per_class": 0}, "validation.min_per_class = 0: Input should be greater than 0"),
        ({"max_imbalance": 0.5}, "validation.max_imbalance = 0.5: Input should be greater than or"),
        ({"min_size": -1}, "validation.min_size = -1"),
        ({"split_tolerance": 2}, "validation.split_tolerance = 2: Input should be less than or"),
        ({"min_std": -0.1}, "validation.min_std = -0.1"),
        ({"drift_max_shift": -1}, "validation.drift_max_shift = -1"),
        ({"expected_labels": "benign"}, "validation.expected_labels = 'benign'"),
        ({"expected_labels": []}, "validation.expected_labels = []"),
        ({"expected_labels": ["a", ""]}, "validation.expected_labels.1 = ''"),
        ({"expected_labels": ["a", "b", "a"]}, "labels must be distinct, e.g. [benign, malignant]"),
        ({"report_path": ""}, "validation.report_path = ''"),
        ({"no_such_key": 1}, "validation.no_such_key: unknown key"),
        ({"allowed_values": {"view": []}}, "validation.allowed_values.view = []"),
        ({"allowed_values": {"view": "CC"}}, "validation.allowed_values.view = 'CC'"),
        (
            {"max_missing_share": {"view": 1.5}},
            "validation.max_missing_share.view = 1.5: Input should be less than or equal to 1",
        ),
    ],
)
def test_each_bad_value_names_its_key(change, message):
    assert message in refusal("validation", **change)


def test_a_check_without_a_severity_is_missing():
    params = base_params("validation")
    del params["severity"]["group_in_one_split"]
    with pytest.raises(ParameterError, match=r"validation\.severity\.group_in_one_split: missing"):
        validate_block("validation", params)


def test_both_severities_are_listed_when_one_is_wrong():
    with pytest.raises(ParameterError, match="Input should be 'error' or 'warning'"):
        validate_block("validation", base_params("validation", severity=_severity(path_unique=1)))
