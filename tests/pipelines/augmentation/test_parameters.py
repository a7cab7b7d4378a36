"""The ``augmentation`` parameter model: conf/base and demo validate, bad values are named."""

import pytest

from breast_cancer_pipeline.param_schema import ParameterError, validate_block
from tests.params import base_params, refusal


@pytest.mark.parametrize(("env", "size"), [(None, 224), ("demo", 128)])
def test_configured_blocks_validate(env, size):
    model = validate_block("augmentation", base_params("augmentation", env=env))
    assert model.image_size == size
    assert model.flip == "horizontal"
    assert model.resize == "stretch"  # today's geometry: results do not move


def test_image_size_takes_height_and_width():
    model = validate_block("augmentation", base_params("augmentation", image_size=[1024, 512]))
    assert model.image_size == (1024, 512)


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        ({"image_size": 8}, "augmentation.image_size = 8", "at least 16 px; e.g. 224"),
        ({"image_size": [1024, 8]}, "image_size = [1024, 8]", "each side must be at least 16"),
        ({"image_size": 64.5}, "augmentation.image_size = 64.5", "[height, width], two positive"),
        ({"image_size": [512]}, "augmentation.image_size = [512]", "e.g. 224 for a square or"),
        ({"image_size": [1024, 512, 3]}, "image_size = [1024, 512, 3]", "[1024, 512] for a"),
        ({"image_size": [0, 512]}, "image_size = [0, 512]", "two positive ints"),
        ({"image_size": [64.0, 32]}, "image_size = [64.0, 32]", "two positive ints"),
        ({"image_size": "224"}, "augmentation.image_size = '224'", "one positive int"),
        ({"image_size": True}, "augmentation.image_size = True", "one positive int"),
        (
            {"resize": "squash"},
            "augmentation.resize = 'squash'",
            "'stretch', 'letterbox' or 'crop_foreground'",
        ),
        ({"crop_margin": 0.5}, "augmentation.crop_margin = 0.5", "less than 0.5"),
        ({"crop_margin": -0.1}, "augmentation.crop_margin = -0.1", "greater than or equal to 0"),
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


@pytest.mark.parametrize(
    ("stain", "key", "message"),
    [
        ({"normalize": "vahadane"}, "augmentation.stain.normalize = 'vahadane'", "'reinhard'"),
        ({"jitter": 1.0}, "augmentation.stain.jitter = 1.0", "less than 1"),
        ({"reference_images": 0}, "augmentation.stain.reference_images = 0", "greater than 0"),
    ],
)
def test_bad_stain_values_are_named(stain, key, message):
    text = refusal("augmentation", stain=stain)
    assert key in text and message in text


@pytest.mark.parametrize(
    ("stain", "named"), [({"normalize": "macenko"}, "normalize='macenko'"), ({"jitter": 0.05}, "")]
)
def test_a_stain_setting_with_grayscale_images_is_refused_before_the_run(stain, named):
    from breast_cancer_pipeline.param_schema import check_parameters

    parameters = {
        "augmentation": base_params("augmentation", stain=stain),
        "ingestion": base_params("ingestion", color_mode="grayscale"),
    }
    with pytest.raises(ParameterError) as info:
        check_parameters(parameters, ["augmentation"])
    text = str(info.value)
    assert "augmentation.stain (" in text and named in text
    assert "ingestion.color_mode = 'grayscale'" in text and "set ingestion.color_mode: rgb" in text
    parameters["ingestion"]["color_mode"] = "rgb"
    assert check_parameters(parameters, ["augmentation"]) == ["augmentation"]


def test_tiles_need_only_size_and_stride():
    model = validate_block(
        "augmentation", base_params("augmentation", tiles={"size": 64, "stride": 32})
    )
    assert (model.tiles.size, model.tiles.stride, model.tiles.scale) == (64, 32, 1.0)
    assert (model.tiles.aggregation, model.tiles.labels) == ("mean", "image")
    assert validate_block("augmentation", base_params("augmentation")).tiles is None


@pytest.mark.parametrize(
    ("tiles", "key", "message"),
    [
        ({"size": 64, "stride": 0}, "augmentation.tiles.stride = 0", "greater than 0"),
        ({"size": 4, "stride": 4}, "augmentation.tiles.size = 4", "greater than or equal to 8"),
        (
            {"size": 64, "stride": 64, "scale": 0.5},
            "tiles.scale = 0.5",
            "greater than or equal to 1",
        ),
        ({"size": 64, "stride": 64, "min_lesion": 0}, "tiles.min_lesion = 0", "greater than 0"),
        ({"size": 64, "stride": 64, "min_lesion": 1.5}, "tiles.min_lesion = 1.5", "less than or"),
        ({"size": 64, "stride": 64, "aggregation": "median"}, "tiles.aggregation", "'attention'"),
        ({"size": 64, "stride": 64, "labels": "boxes"}, "tiles.labels = 'boxes'", "'mask'"),
        ({"size": 64, "stride": 64, "max_per_image": 0}, "tiles.max_per_image = 0", "greater"),
        ({"size": 64}, "augmentation.tiles.stride: missing", ""),
        ({"size": 64, "stride": 64, "overlap": 1}, "augmentation.tiles.overlap: unknown", ""),
    ],
)
def test_bad_tiles_are_named(tiles, key, message):
    text = refusal("augmentation", tiles=tiles)
    assert key in text
    assert message in text


def test_mask_labels_without_masks_are_refused_before_the_run():
    from breast_cancer_pipeline.param_schema import check_parameters

    tiles = {"size": 64, "stride": 64, "labels": "mask", "background_label": "normal"}
    parameters = {
        "augmentation": base_params("augmentation", tiles=tiles),
        "ingestion": {"mask_pattern": None, "csv": {"mask_column": None}},
    }
    with pytest.raises(ParameterError) as refused:
        check_parameters(parameters, ["augmentation"])
    text = str(refused.value)
    assert "augmentation.tiles.labels = 'mask'" in text
    assert "ingestion.mask_pattern" in text and "ingestion.csv.mask_column" in text
    for masks in ({"mask_pattern": "{stem}_mask.png"}, {"csv": {"mask_column": "roi"}}):
        assert check_parameters({**parameters, "ingestion": masks}, ["augmentation"])


def test_the_attention_head_settings_default_and_bad_ones_are_named():
    from breast_cancer_pipeline.tiles import ATTENTION_DEFAULTS, attention_settings

    tiles = {"size": 64, "stride": 64, "aggregation": "attention", "attention": {"hidden": 32}}
    model = validate_block("augmentation", base_params("augmentation", tiles=tiles))
    assert model.tiles.attention.model_dump() == {**ATTENTION_DEFAULTS, "hidden": 32}
    assert attention_settings(tiles) == model.tiles.attention.model_dump()
    bad = {**tiles, "attention": {"learning_rate": 0, "max_tile": 4}}
    text = refusal("augmentation", tiles=bad)
    assert "augmentation.tiles.attention.learning_rate = 0" in text
    assert "augmentation.tiles.attention.max_tile: unknown key" in text
