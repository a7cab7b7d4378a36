"""The ``evaluation`` parameter model: conf/base validates, bad values are named."""

import pytest

from breast_cancer_pipeline.param_schema import schema_for, validate_block
from tests.params import base_params, refusal


def test_shared_block_has_its_model_outside_the_pipelines():
    assert schema_for("evaluation").__module__ == "breast_cancer_pipeline.evaluation.parameters"
    model = validate_block("evaluation", base_params("evaluation", env="demo"))
    assert (model.folds, model.ensemble, model.tta) == (1, False, "off")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"folds": 0}, "evaluation.folds = 0"),
        ({"tta": "rotations"}, "evaluation.tta = 'rotations'"),
        ({"calibration": "platt"}, "evaluation.calibration = 'platt'"),
        ({"ensemble": True}, "set evaluation.folds to 2 or more"),
        ({"fold": 3}, "evaluation.fold: unknown key"),
        ({"fold_val_share": 0.6}, "evaluation.fold_val_share = 0.6"),
        ({"tta": "flips", "tta_passes": 5}, "tta 'flips' has 4 views"),
        ({"tta_shift": 0.5}, "evaluation.tta_shift = 0.5"),
    ],
)
def test_bad_values_are_named(overrides, message):
    assert message in refusal("evaluation", **overrides)


def test_an_unquoted_off_means_off():
    """``--params evaluation.tta=off``: YAML reads it as false."""
    model = validate_block("evaluation", base_params("evaluation", tta=False))
    assert model.tta == "off"
