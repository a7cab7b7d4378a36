import json
import logging
import re
import subprocess
import sys

import pandas as pd
import pytest
from kedro_datasets.partitions import PartitionedDataset

from breast_cancer_pipeline.param_schema import ParameterError
from breast_cancer_pipeline.pipelines.validation import create_pipeline
from breast_cancer_pipeline.pipelines.validation.expectations import (
    CHECKS,
    MASK_SPECS,
    build_tables,
    gate_settings,
)
from breast_cancer_pipeline.pipelines.validation.nodes import (
    DataValidationError,
    enforce_gate,
    run_expectations,
)
from tests.params import base_params

THREE_WAY = base_params("ingestion", split={"ratios": [0.8, 0.1, 0.1]})
REPORT = base_params("validation")["report_path"]


def make_params(**overrides):
    defaults = {
        "expected_labels": ["benign", "malignant"],
        "min_per_class": 2,
        "allowed_values": {"laterality": ["L", "R"], "view": ["CC", "MLO"]},
        "max_missing_share": {"laterality": 0.0, "view": 0.1},
    }
    return base_params("validation", **{**defaults, **overrides})


def make_manifest(origin="seeded"):
    """40 images, 80/10/10 split, 2 balanced classes, every split's mean intensity exactly 100,
    two views of each breast (a group holds two images: a breast)."""
    rows = []
    for split, per_class in (("train", 16), ("val", 2), ("test", 2)):
        for label in ("benign", "malignant"):
            for i in range(per_class):
                path = f"{label}/{split}_{i}.png"
                rows.append(
                    {
                        "path": path,
                        "source_path": f"raw/{path}",
                        "label": label,
                        "split": split,
                        "group": f"{split}-{label}-{i // 2}",
                        "width": 64,
                        "height": 48,
                        "channels": 1,
                        "sha256": f"{len(rows):064x}",
                        "mean": 100.0 + (5.0 if i % 2 else -5.0),
                        "std": 40.0 + i % 3,
                        "split_origin": origin,
                        "laterality": "LR"[i % 2],
                        "view": ("CC", "MLO")[i // 2 % 2],
                        "manufacturer": "",
                        "patient_age": 40.0 + i,
                        "study": "",
                    }
                )
    return pd.DataFrame(rows)


def row(manifest, path):
    (index,) = manifest.index[manifest["path"] == path]
    return index


def entry(results, name):
    (found,) = [e for e in results["expectations"] if e["name"] == name]
    return found


@pytest.fixture(scope="module")
def clean_run():
    manifest = make_manifest()
    return manifest, *run_expectations(manifest, make_params(), THREE_WAY)


def test_clean_manifest_passes_every_expectation_and_is_returned_unchanged(clean_run, caplog):
    manifest, results, metrics, _, _ = clean_run

    assert results["success"] is True
    assert results["failed"] == []
    # every check but the external site's (there is none; see test_external.py)
    assert {e["name"] for e in results["expectations"]} == set(CHECKS) - {"external_drift"}
    assert all(e["success"] for e in results["expectations"])
    assert entry(results, "manifest_not_empty")["observed_value"] == 40
    # rows of each derived table: 2 classes x 3 splits, 20 groups, 3 splits
    assert entry(results, "min_images_per_class")["observed_value"]["element_count"] == 6
    assert entry(results, "group_in_one_split")["observed_value"]["element_count"] == 20
    assert entry(results, "split_proportions")["observed_value"]["element_count"] == 3
    assert entry(results, "min_image_size")["expected"] == "width ≥ 32 px; height ≥ 32 px"
    assert all(e["unexpected_count"] in (0, None) for e in results["expectations"])
    assert metrics == {
        "validation.evaluated": {"value": 20.0, "step": 0},
        "validation.failed": {"value": 0.0, "step": 0},
        "validation.failed_errors": {"value": 0.0, "step": 0},
        "validation.failed_warnings": {"value": 0.0, "step": 0},
    }
    json.dumps(results, allow_nan=False)

    with caplog.at_level(logging.INFO):
        gated = enforce_gate(manifest, results, make_params())
    assert gated is manifest
    assert f"20 data validation expectations on 40 images, 0 failed. Report: {REPORT}" in (
        caplog.text
    )


def test_data_docs_hold_index_and_validation_pages_with_working_links(clean_run, tmp_path):
    _, _, _, docs, _ = clean_run
    assert "index.html" in docs
    pages = [key for key in docs if key.startswith("validations/")]
    tables = {"images", "class_counts", "train_class_balance", "image_hashes", "groups"}
    tables |= {"split_proportions", "split_intensity", "image_columns", "column_missing"}
    assert {page.split("/")[1] for page in pages} == tables
    images_page = next(docs[page] for page in pages if page.startswith("validations/images/"))
    assert "no_blank_images (error): per-image intensity std ≥ 2" in images_page

    PartitionedDataset(path=str(tmp_path), dataset="text.TextDataset").save(docs)
    index = tmp_path / "index.html"
    # Suite pages are plain links; validation rows are links in the page's table data.
    html = index.read_text()
    links = set(re.findall(r'href="([^"#:]+\.html)"', html))
    links |= set(re.findall(r"'_table_row_link_path': '([^']+)'", html))
    assert set(pages) <= links
    assert all((tmp_path / link).is_file() for link in links)
    for page in pages:
        home = re.findall(r'href="([^"#:]*index\.html)"', (tmp_path / page).read_text())
        assert home
        assert all((tmp_path / page).parent.joinpath(link).resolve() == index for link in home)


def _duplicate_across_splits(manifest):
    manifest.loc[row(manifest, "benign/test_0.png"), "sha256"] = manifest.loc[
        row(manifest, "benign/train_3.png"), "sha256"
    ]
    return ["benign/train_3.png", "benign/test_0.png"]


def _one_image_two_labels(manifest):
    manifest.loc[row(manifest, "malignant/train_5.png"), "sha256"] = manifest.loc[
        row(manifest, "benign/train_4.png"), "sha256"
    ]
    return ["benign/train_4.png", "malignant/train_5.png"]


def _blank_image(manifest):
    manifest.loc[row(manifest, "malignant/val_1.png"), "std"] = 0.0
    return ["malignant/val_1.png"]


def _patient_in_two_splits(manifest):
    manifest.loc[row(manifest, "benign/test_1.png"), "group"] = "train-benign-0"
    return ["benign/train_0.png", "benign/train_1.png", "benign/test_1.png"]


def _missing_class_in_split(manifest):
    val_malignant = manifest.index[manifest["path"].str.startswith("malignant/val_")]
    manifest.loc[val_malignant, "split"] = "train"  # a class missing from val
    return ["val/malignant"]


@pytest.mark.parametrize(
    ("plant", "origin", "expectation"),
    [
        (_duplicate_across_splits, "provider", "sha256_in_one_split"),
        (_one_image_two_labels, "seeded", "sha256_in_one_label"),
        (_blank_image, "seeded", "no_blank_images"),
        (_patient_in_two_splits, "provider", "group_in_one_split"),
        (_missing_class_in_split, "seeded", "min_images_per_class"),
    ],
)
def test_planted_fault_stops_the_gate_naming_expectation_and_offender(plant, origin, expectation):
    manifest = make_manifest(origin=origin)
    offenders = plant(manifest)
    results, metrics, _, _ = run_expectations(manifest, make_params(), THREE_WAY)

    assert results["failed"] == [expectation]
    assert metrics["validation.failed_errors"]["value"] == 1.0
    found = entry(results, expectation)
    assert set(offenders) <= set(found["offending_paths"] + found["offending_rows"])
    with pytest.raises(DataValidationError) as raised:
        enforce_gate(manifest, results, make_params())
    message = str(raised.value)
    assert f"{expectation} [error]" in message
    assert all(offender in message for offender in offenders)
    assert REPORT in message
    if origin == "provider":
        skipped = [s["name"] for s in results["skipped"] if s["name"] not in MASK_SPECS]
        assert skipped == ["split_proportions", "external_drift"]  # mask checks: no masks


def test_failed_warnings_are_logged_and_do_not_stop_the_gate(caplog):
    manifest = make_manifest()
    manifest.loc[manifest["split"] == "test", "mean"] = 200.0
    results, metrics, _, _ = run_expectations(manifest, make_params(), THREE_WAY)

    assert results["failed"] == ["intensity_drift"]
    assert results["success"] is True
    assert metrics["validation.failed_warnings"]["value"] == 1.0
    assert metrics["validation.failed_errors"]["value"] == 0.0
    assert entry(results, "intensity_drift")["offending_rows"] == ["test"]
    with caplog.at_level(logging.WARNING):
        assert enforce_gate(manifest, results, make_params()) is manifest
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "intensity_drift [warning]" in warnings[0]
    assert "Offending rows: test." in warnings[0]


def test_severity_override_from_params_decides_what_stops_the_gate():
    manifest = make_manifest()
    _blank_image(manifest)
    manifest.loc[manifest["split"] == "test", "mean"] = 200.0
    params = make_params()
    params["severity"] |= {"no_blank_images": "warning", "intensity_drift": "error"}
    results, metrics, _, _ = run_expectations(manifest, params, THREE_WAY)

    assert entry(results, "no_blank_images")["severity"] == "warning"
    assert metrics["validation.failed_errors"]["value"] == 1.0
    assert metrics["validation.failed_warnings"]["value"] == 1.0
    with pytest.raises(DataValidationError, match="intensity_drift") as raised:
        enforce_gate(manifest, results, params)
    assert "no_blank_images" not in str(raised.value)


def test_two_ratios_expect_val_carved_out_of_train():
    manifest = make_manifest()  # 80 % train, 10 % val, 10 % test
    matching = base_params("ingestion", split={"ratios": [0.9, 0.1], "val_from_train": 1 / 9})
    results, _, _, _ = run_expectations(manifest, make_params(), matching)

    proportions = entry(results, "split_proportions")
    assert proportions["success"] is True
    assert "configured train 0.8, val 0.1, test 0.1" in proportions["expected"]


def test_split_shares_off_by_more_than_the_tolerance_are_a_warning_naming_the_splits():
    manifest = make_manifest()  # 80/10/10 against train 0.595, val 0.105, test 0.3
    two_way = base_params("ingestion", split={"ratios": [0.7, 0.3], "val_from_train": 0.15})
    results, _, _, _ = run_expectations(manifest, make_params(), two_way)

    proportions = entry(results, "split_proportions")
    assert proportions["success"] is False
    assert proportions["severity"] == "warning"
    assert results["success"] is True
    assert proportions["offending_rows"] == ["train", "test"]
    assert proportions["observed_value"]["unexpected_values"] == pytest.approx([0.205, 0.2])


def test_broken_manifest_fails_expectations_instead_of_raising():
    manifest = make_manifest().drop(columns=["sha256"])
    manifest.loc[0, "label"] = None
    manifest.loc[1, "label"] = "normal"
    results, _, docs, _ = run_expectations(manifest, make_params(), THREE_WAY)

    mismatched = entry(results, "required_columns_present")["observed_value"]["mismatched"]
    assert mismatched["missing"] == ["sha256"]
    assert entry(results, "required_columns_not_null")["offending_paths"] == ["benign/train_0.png"]
    assert entry(results, "labels_in_set")["offending_paths"] == ["benign/train_1.png"]
    assert {"required_columns_present", "required_columns_not_null", "labels_in_set"} <= set(
        results["failed"]
    )
    assert "index.html" in docs
    json.dumps(results, allow_nan=False)


def test_invalid_validation_block_fails_before_any_check_naming_the_key():
    with pytest.raises(ParameterError, match=r"validation\.min_per_class = 0"):
        run_expectations(make_manifest(), make_params(min_per_class=0), THREE_WAY)


def test_bad_split_ratios_name_the_ingestion_parameter():
    bad = base_params("ingestion", split={"ratios": [0.5, 0.2]})
    with pytest.raises(ValueError, match=r"ingestion\.split\.ratios .*got \[0\.5, 0\.2\]"):
        run_expectations(make_manifest(), make_params(), bad)


def test_pipeline_wiring():
    nodes = {node.name: node for node in create_pipeline().nodes}
    assert set(nodes) == {"run_expectations", "enforce_gate"}
    run, gate = nodes["run_expectations"], nodes["enforce_gate"]
    assert run.inputs == [
        "manifest",
        "params:validation",
        "params:ingestion",
        "mask_table",
        "params:augmentation",
    ]
    assert run.outputs == [
        "validation_results",
        "validation_metrics",
        "validation_data_docs",
        "validation_report",
    ]
    assert gate.inputs == ["manifest", "validation_results", "params:validation"]
    assert gate.outputs == ["validated_manifest"]


def test_importing_the_pipeline_does_not_import_great_expectations():
    code = (
        "import sys, breast_cancer_pipeline.pipelines.validation.pipeline;"
        "heavy = ('great_expectations', 'tensorflow', 'mlflow');"
        "print(sorted(module for module in heavy if module in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _report_row(report, name):
    (row,) = re.findall(rf'<tr id="{name}">(.*?)</tr>', report, flags=re.S)
    return re.findall(r"<td>(.*?)</td>", row, flags=re.S)


def test_offline_report_lists_each_failure_with_its_offenders():
    manifest = make_manifest(origin="seeded")
    offenders = _blank_image(manifest)
    results, _, _, report = run_expectations(manifest, make_params(), THREE_WAY)
    assert report.startswith("<!DOCTYPE html>")
    assert 'Data validation: <span class="fail">failed</span>' in report
    assert "40 images, 20 expectations evaluated, 1 failed\n(1 of severity" in report
    cells = _report_row(report, "no_blank_images")
    assert cells[:3] == [
        "<code>no_blank_images</code>",
        "error",
        '<span class="fail">FAILED</span>',
    ]
    # The description's `key` spans are shown as code.
    assert cells[3] == re.sub(r"`([^`]+)`", r"<code>\1</code>", CHECKS["no_blank_images"])
    assert "<code>validation.min_std</code>" in cells[3]
    assert cells[4] == "per-image intensity std ≥ 2"
    assert cells[6] == offenders[0]
    assert _report_row(report, "path_unique")[2] == '<span class="pass">passed</span>'
    assert "http" not in report  # self-contained: nothing to fetch
    assert report.count("<tr id=") == results["evaluated"]


def test_offline_report_of_a_clean_run(clean_run):
    report = clean_run[4]
    assert 'Data validation: <span class="pass">passed</span>' in report
    assert "FAILED" not in report
    assert report.count('<span class="pass">passed</span>') == len(CHECKS)
    assert "<code>external_drift</code> (no external test site" in report


def test_offline_report_of_a_provider_split_says_what_was_skipped_and_why():
    results, _, _, report = run_expectations(
        make_manifest(origin="provider"), make_params(), THREE_WAY
    )
    assert results["evaluated"] == len(CHECKS) - 2
    assert (
        "<code>split_proportions</code> (the dataset provider made the split (split_origin))"
        in (report)
    )


def test_derived_tables_hold_the_counts_shares_and_shifts():
    manifest = make_manifest()
    manifest.loc[
        manifest["path"].isin(["malignant/train_0.png", "malignant/train_1.png"]), "split"
    ] = "test"
    manifest.loc[manifest["split"] == "val", "mean"] += 10.0
    settings = gate_settings(make_params(), THREE_WAY)
    tables = build_tables(manifest, settings)

    counts = tables["class_counts"].frame.set_index("key")["n_images"]
    assert counts.to_dict() == {
        "train/benign": 16,
        "train/malignant": 14,
        "val/benign": 2,
        "val/malignant": 2,
        "test/benign": 2,
        "test/malignant": 4,
    }
    (balance,) = tables["train_class_balance"].frame.to_dict("records")
    assert balance["key"] == "train: benign=16 vs malignant=14"
    assert balance["imbalance_ratio"] == pytest.approx(16 / 14)
    shares = tables["split_proportions"].frame.set_index("key")
    assert shares["n_images"].to_dict() == {"train": 30, "val": 4, "test": 6}
    assert shares["deviation"].to_dict() == pytest.approx({"train": 0.05, "val": 0.0, "test": 0.05})
    train_means = manifest.loc[manifest["split"] == "train", "mean"]
    shift = tables["split_intensity"].frame.set_index("key")["shift_in_train_sd"]
    assert shift["val"] == pytest.approx(10.0 / train_means.std(ddof=1))
    assert shift["train"] == 0.0


def test_gate_settings_take_the_split_shares_from_the_one_manifest_function():
    two_way = base_params("ingestion", split={"ratios": [0.8, 0.2], "val_from_train": 0.25})
    settings = gate_settings(make_params(), two_way)
    assert settings.split_shares == pytest.approx({"train": 0.6, "val": 0.2, "test": 0.2})
    assert settings.params.min_per_class == 2


def test_descriptive_columns_are_checked_for_presence_type_values_and_missing_share():
    manifest = make_manifest().drop(columns=["study"])
    manifest["patient_age"] = manifest["patient_age"].astype(object)
    manifest.loc[row(manifest, "benign/train_0.png"), "patient_age"] = "57Y"  # not a number
    manifest.loc[row(manifest, "benign/train_1.png"), "patient_age"] = 150.0  # out of range
    manifest.loc[row(manifest, "benign/val_0.png"), "view"] = "ML"  # not allowed
    for i in range(5):  # 5 of 40 = 12.5 % empty, 10 % allowed
        manifest.loc[row(manifest, f"malignant/train_{i}.png"), "view"] = ""
    results, _, _, _ = run_expectations(manifest, make_params(), THREE_WAY)

    assert results["failed"] == [
        "descriptive_columns_present",
        "descriptive_column_types",
        "descriptive_values_allowed",
        "descriptive_missing_share",
    ]
    present = entry(results, "descriptive_columns_present")["observed_value"]["mismatched"]
    assert present["missing"] == ["study"]
    types = entry(results, "descriptive_column_types")
    assert types["offending_paths"] == ["benign/train_0.png", "benign/train_1.png"]
    assert entry(results, "descriptive_values_allowed")["offending_paths"] == ["benign/val_0.png"]
    (missing,) = entry(results, "descriptive_missing_share")["offending_rows"]
    assert missing == "view: 12.5% empty (5 of 40 images), at most 10.0% allowed"
    with pytest.raises(DataValidationError) as raised:
        enforce_gate(manifest, results, make_params())
    message = str(raised.value)
    assert "view: 12.5% empty" in message and "raise `validation.max_missing_share" in message
    assert "Offending paths: benign/val_0.png" in message


def test_the_descriptive_values_compare_as_text():
    manifest = make_manifest()
    manifest["magnification"] = [40.0, 100.0, float("nan"), 400.0] * 10  # parquet: floats
    params = make_params(allowed_values={"magnification": [40, "100", 200, 400]})
    tables = build_tables(manifest, gate_settings(params, THREE_WAY))
    frame = tables["image_columns"].frame
    assert frame["magnification"].tolist()[:4] == ["40", "100", None, "400"]
    assert frame["patient_age_years"].tolist()[:2] == [40.0, 41.0]
    missing = tables["column_missing"].frame.set_index("column")
    assert missing.loc["view", "missing_share"] == 0.0
