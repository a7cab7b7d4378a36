"""The gate's mask checks: each failure names its file; one severity for all of them."""

from __future__ import annotations

import pandas as pd
import pytest

from breast_cancer_pipeline.pipelines.validation.expectations import (
    MASK_SPECS,
    build_checks,
    build_tables,
    gate_settings,
)
from breast_cancer_pipeline.pipelines.validation.nodes import (
    DataValidationError,
    enforce_gate,
    run_expectations,
)
from tests.params import base_params

from .test_pipeline import make_manifest, make_params

INGESTION = base_params(
    "ingestion", split={"ratios": [0.8, 0.1, 0.1]}, mask_pattern="{stem}_mask.png"
)
MASK_LABELS = {"tiles": {"labels": "mask"}}

#: Mask file -> how it is broken (None: fine), on images of make_manifest (64 x 48 px).
BROKEN = {
    "benign/train_0_mask.png": None,
    "malignant/train_1_mask.png": "size",
    "malignant/train_2_mask.png": "values",
    "benign/train_3_mask.png": "empty",
    "malignant/train_4_mask.png": "unreadable",
    "benign/ghost_mask.png": "orphan",
}


def _with_masks() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest with a mask for every image but malignant/train_5, and the mask table."""
    manifest = make_manifest()
    manifest["mask_path"] = manifest["path"].str.replace(".png", "_mask.png")
    manifest.loc[manifest["path"] == "malignant/train_5.png", "mask_path"] = ""
    rows = []
    for mask, problem in BROKEN.items():
        image = "" if problem == "orphan" else mask.replace("_mask", "")
        label = "" if problem == "orphan" else mask.split("/")[0]
        rows.append(
            {
                "mask": mask,
                "image": image,
                "label": label,
                "error": "cannot decode" if problem == "unreadable" else "",
                "width": 60.0 if problem == "size" else 64.0,
                "height": 48.0,
                "image_width": 64.0,
                "image_height": 48.0,
                "n_values": 7.0 if problem == "values" else 2.0,
                "lesion_pixels": 0.0 if problem == "empty" else 12.0,
            }
        )
    return manifest, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def checked():
    manifest, masks = _with_masks()
    results, *_ = run_expectations(manifest, make_params(), INGESTION, masks, MASK_LABELS)
    return manifest, results


def _entry(results, name):
    (found,) = [e for e in results["expectations"] if e["name"] == name]
    return found


@pytest.mark.parametrize(
    ("check", "offender"),
    [
        ("mask_readable", "malignant/train_4_mask.png"),
        ("mask_has_image", "benign/ghost_mask.png"),
        ("mask_size_matches", "malignant/train_1_mask.png"),
        ("mask_binary", "malignant/train_2_mask.png"),
        ("mask_not_empty", "benign/train_3_mask.png"),
        ("lesion_image_has_mask", "malignant/train_5.png"),
    ],
)
def test_each_mask_check_fails_naming_only_its_file(checked, check, offender):
    _, results = checked
    entry = _entry(results, check)
    assert not entry["success"] and entry["severity"] == "error"
    assert (entry["offending_rows"] or entry["offending_paths"]) == [offender]


def test_the_gate_stops_naming_the_files(checked):
    manifest, results = checked
    with pytest.raises(DataValidationError) as error:
        enforce_gate(manifest, results, make_params())
    for mask, problem in BROKEN.items():
        assert (mask in str(error.value)) == (problem is not None)
    assert "malignant/train_5.png" in str(error.value)


def test_mask_checks_take_one_severity_and_need_masks():
    manifest, masks = _with_masks()
    warning = make_params(masks={"lesion_classes": None, "severity": "warning"})
    settings = gate_settings(warning, INGESTION, MASK_LABELS)
    checks, skipped = build_checks(build_tables(manifest, settings, masks), settings)
    assert {c.name: c.severity for c in checks if c.name in MASK_SPECS} == dict.fromkeys(
        MASK_SPECS, "warning"
    )
    assert not set(MASK_SPECS) & set(skipped)
    plain = gate_settings(make_params(), base_params("ingestion"), None)
    _, skipped = build_checks(build_tables(manifest, plain, masks), plain)
    assert set(MASK_SPECS) <= set(skipped)


def test_lesion_classes_default_to_every_class_but_normal():
    manifest, masks = _with_masks()
    only_malignant = make_params(masks={"lesion_classes": ["malignant"], "severity": "error"})
    for params, expected in ((make_params(), 12.0), (only_malignant, None)):
        settings = gate_settings(params, INGESTION, MASK_LABELS)
        table = build_tables(manifest, settings, masks)["masks"].frame.set_index("mask")
        value = table.loc["benign/train_0_mask.png", "lesion_pixels"]
        assert value == expected if expected is not None else pd.isna(value)
