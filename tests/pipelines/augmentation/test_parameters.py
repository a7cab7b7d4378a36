"""The ``augmentation`` parameter model: conf/base and demo validate, bad values are named."""

import pytest

from breast_cancer_pipeline.param_schema import ParameterError, validate_block
from tests.params import base_params, refusal


@pytest.mark.parametrize(("env", "size"), [(None, 224), ("demo", 128)])
def test_configured_blocks_validate(env, size):
    model = validate_block("augmentation", base_params("augmentation", env=env))
    assert model.image_size == size
    assert model.flip == "horizontal"


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        ({"image_size": 8}, "augmentation.image_size = 8", "greater than or equal to 16"),
        ({"image_size": 64.5}, "augmentation.image_size = 64.5", "valid integer"),
        ({"flip": "diagonal"}, "augmentation.flip = 'diagonal'", "'horizontal_and_vertical'"),
        ({"zoom": 1.5}, "augmentation.zoom = 1.5", "less than 1"),
        ({"rotation": -0.1}, "augmentation.rotation = -0.1", "greater than or equal to 0"),
        ({"contrast": None}, "augmentation.contrast = None", "valid number"),
        ({"preview": {"rows": 0}}, "augmentation.preview.rows = 0", "greater than 0"),
        ({"preview": {"figure_dpi": 0}}, "augmentation.preview.figure_dpi = 0", ""),
        ({"shear": 0.1}, "augmentation.shear: unknown key", ""),
    ],
)
def test_bad_values_are_named(overrides, key, message):
    text = refusal("augmentation", **overrides)
    assert key in text
    assert message in text


def test_a_missing_key_points_to_conf_base():
    params = base_params("augmentation")
    del params["translation"]
    with pytest.raises(ParameterError, match="augmentation.translation: missing; add it to conf"):
        validate_block("augmentation", params)
