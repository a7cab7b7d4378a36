"""The typed ``ingestion`` parameters: conf/base and demo validate, every bad value is named."""

import pytest

from breast_cancer_pipeline.param_schema import ParameterError, validate_block
from tests.params import base_params


@pytest.mark.parametrize(
    ("env", "external_dir"), [(None, None), ("demo", "data/01_raw/demo_external")]
)
def test_conf_blocks_validate(env, external_dir):
    cfg = validate_block("ingestion", base_params("ingestion", env=env))
    assert cfg.external_dir == external_dir


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"layout": "folders"}, "ingestion.layout"),
        ({"layout": "csv"}, "ingestion.csv.path"),
        ({"csv": {"path": "t.csv"}}, "ingestion.csv.path_column"),
        ({"color_mode": "cmyk"}, "ingestion.color_mode"),
        ({"on_bad_file": "ignore"}, "ingestion.on_bad_file"),
        ({"max_pixels": 0}, "ingestion.max_pixels"),
        ({"max_decoded_bytes": 0}, "ingestion.max_decoded_bytes"),
        ({"window_percentiles": [99.5, 0.5]}, "ingestion.window_percentiles"),
        ({"window_percentiles": [0.5, 101]}, "ingestion.window_percentiles"),
        ({"multipage": "last"}, "ingestion.multipage"),
        ({"follow_external_links": "sometimes"}, "ingestion.follow_external_links"),
        ({"workers": 0}, "ingestion.workers"),
        ({"workers": "many"}, "ingestion.workers"),
        ({"images_per_worker": 0}, "ingestion.images_per_worker"),
        ({"tasks_per_worker": -1}, "ingestion.tasks_per_worker"),
        ({"png_compress_level": 12}, "ingestion.png_compress_level"),
        ({"progress_seconds": -1}, "ingestion.progress_seconds"),
        ({"label_pattern": "("}, "ingestion.label_pattern"),
        ({"group_pattern": "no group"}, "ingestion.group_pattern"),
        ({"split": {"ratios": [0.5, 0.4]}}, "ingestion.split.ratios"),
        ({"split": {"ratios": [0.7, -0.1, 0.4]}}, "ingestion.split.ratios"),
        (
            {"split": {"ratios": [0.7, 0.3], "val_from_train": 1.0}},
            "ingestion.split.val_from_train",
        ),
        ({"external_dir": 3}, "ingestion.external_dir"),
        ({"unknown_key": 1}, "ingestion.unknown_key"),
    ],
)
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ParameterError, match=key.replace(".", r"\.")):
        validate_block("ingestion", base_params("ingestion", **overrides))


def test_every_key_is_required():
    block = base_params("ingestion")
    del block["multipage"]
    with pytest.raises(ParameterError, match=r"ingestion\.multipage: missing"):
        validate_block("ingestion", block)
