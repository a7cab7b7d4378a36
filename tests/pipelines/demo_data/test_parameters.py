"""The ``demo_data`` parameter model: conf/base validates, each bad value is named."""

from typing import get_args

import pytest

from breast_cancer_pipeline.param_schema import ParameterError, validate_block
from breast_cancer_pipeline.pipelines.demo_data.nodes import FORMAT_EXTENSIONS
from breast_cancer_pipeline.pipelines.demo_data.parameters import ImageFormat
from tests.params import base_params, refusal


@pytest.mark.parametrize("env", [None, "demo"])
def test_configured_block_validates_into_typed_values(env):
    cfg = validate_block("demo_data", base_params("demo_data", env=env))
    assert cfg.preset == "standard" and {"standard", "hard"} <= set(cfg.presets)
    assert cfg.difficulty.lesion_radius == (0.11, 0.22)
    assert cfg.difficulty.label_noise == 0.0
    kinds = {name: preset.kind for name, preset in cfg.presets.items()}
    assert kinds == {
        "standard": "ultrasound",
        "hard": "ultrasound",
        "microcalc": "microcalc",
        "histology": "histology",
    }
    assert cfg.presets["microcalc"].image_size == (1024, 768)
    assert cfg.spicules == (8, 16) and all(isinstance(v, int) for v in cfg.spicules)
    assert cfg.format_mix == {"png": 0.6, "jpeg": 0.25, "tiff16": 0.15}


def test_every_format_has_an_extension():
    assert set(get_args(ImageFormat)) == set(FORMAT_EXTENSIONS)


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        ({"lesion_patients_per_class": 0}, "lesion_patients_per_class = 0", "greater than 0"),
        ({"lesion_patients_per_class": 2.5}, "lesion_patients_per_class = 2.5", "valid integer"),
        ({"normal_patients": -1}, "normal_patients = -1", "greater than or equal to 0"),
        ({"lesion_both_views": 1.5}, "lesion_both_views = 1.5", "less than or equal to 1"),
        ({"seed": None}, "seed = None", "valid integer"),
        ({"image_size": 16}, "image_size = 16", "greater than or equal to 32"),
        ({"jpeg_quality": 100}, "jpeg_quality = 100", "less than or equal to 95"),
        ({"format_mix": {"png": 0.5, "jpeg": 0.4}}, "format_mix = {", "must sum to 1, got 1.05"),
        ({"format_mix": {"bmp": 0.0}}, "format_mix.bmp.[key] = 'bmp'", "'jpeg' or 'tiff16'"),
        (
            {"format_mix": {"png": 1.2, "jpeg": -0.2, "tiff16": 0.0}},
            "format_mix.jpeg = -0.2",
            "or equal to 0",
        ),
        ({"normal_masks": "yes"}, "normal_masks = 'yes'", "valid boolean"),
        (
            {"presets": {"hard": {"lesion_radius": [0.2, 0.1]}}},
            "presets.hard.lesion_radius = [0.2, 0.1]",
            "pair with min <= max",
        ),
        (
            {"presets": {"hard": {"lesion_radius": [0.01, 0.1]}}},
            "presets.hard.lesion_radius.0 = 0.01",
            "greater than or equal to 0.02",
        ),
        (
            {"presets": {"hard": {"lesion_contrast": 0.2}}},
            "presets.hard.lesion_contrast = 0.2",
            "valid tuple",
        ),
        (
            {"presets": {"hard": {"label_noise": 0.6}}},
            "presets.hard.label_noise = 0.6",
            "less than or equal to 0.5",
        ),
        (
            {"preset": "easy"},
            "preset = 'easy'",
            "not one of demo_data.presets (hard, histology, microcalc, standard)",
        ),
        ({"presets": {"x": {"label_noise": 0.1}}}, "presets.x.kind: missing", "add it"),
        (
            {"presets": {"hard": {"kind": "ct"}}},
            "presets.hard.kind = 'ct'",
            "not one of ultrasound, microcalc, histology",
        ),
        (
            {"presets": {"microcalc": {"image_size": [16, 768]}}},
            "presets.microcalc.image_size.0 = 16",
            "greater than or equal to 32",
        ),
        (
            {"presets": {"microcalc": {"lesion_radius": [0.1, 0.2]}}},
            "presets.microcalc.lesion_radius: unknown key",
            "spelling",
        ),
        (
            {"presets": {"histology": {"eosin": [0.1, -0.9, 0.4]}}},
            "presets.histology.eosin.1 = -0.9",
            "greater than or equal to 0",
        ),
        (
            {"external_site": {"normal_patients": -2}},
            "external_site.normal_patients = -2",
            "greater than or equal to 0",
        ),
        (
            {"external_site": {"resolution": 0}},
            "external_site.resolution = 0",
            "greater than 0",
        ),
        ({"spicules": [2.5, 4]}, "spicules.0 = 2.5", "valid integer"),
        ({"gamma": [0.1, 1.0]}, "gamma.0 = 0.1", "greater than or equal to 0.2"),
        ({"gain_db": [-8.0, 8.0, 9.0]}, "gain_db = [-8.0, 8.0, 9.0]", "at most 2 items"),
        ({"speckle_px": -1}, "speckle_px = -1", "greater than or equal to 0"),
    ],
)
def test_invalid_values_are_rejected_naming_the_parameter(override, key, message):
    text = refusal("demo_data", **override)
    assert f"- demo_data.{key}" in text
    assert message in text


def test_a_missing_parameter_is_named():
    params = base_params("demo_data")
    del params["image_size"]
    with pytest.raises(
        ParameterError, match=r"demo_data\.image_size: missing; add it to conf/base"
    ):
        validate_block("demo_data", params)
