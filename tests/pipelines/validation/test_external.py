"""The gate with an external test site: its split is accepted, its drift only warns."""

import logging

import pandas as pd
import pytest

from breast_cancer_pipeline.pipelines.validation.expectations import build_tables, gate_settings
from breast_cancer_pipeline.pipelines.validation.nodes import enforce_gate, run_expectations

from .test_pipeline import THREE_WAY, entry, make_manifest, make_params


def _with_external_site(brightness: float, contrast: float):
    """The clean manifest plus 3 images per class of a site with other intensities."""
    manifest = make_manifest()
    site = manifest[manifest["split"] == "test"].copy()
    site = site.head(4).reset_index(drop=True)
    site["path"] = "external/" + site["path"]
    site["source_path"] = site["path"]
    site["group"] = "external/" + site["group"]
    site["sha256"] = [f"e{i:063x}" for i in range(len(site))]
    site["split"], site["split_origin"] = "external", "external"
    site["mean"] += brightness
    site["std"] += contrast
    return pd.concat([manifest, site], ignore_index=True)


def test_a_shifted_external_site_warns_naming_the_statistics_and_does_not_stop(caplog):
    manifest = _with_external_site(brightness=60.0, contrast=20.0)
    results, _, _, _ = run_expectations(manifest, make_params(), THREE_WAY)

    assert results["failed"] == ["external_drift"]  # splits_in_set, proportions: as before
    assert results["success"] is True
    offenders = entry(results, "external_drift")["offending_rows"]
    assert offenders == ["external: mean intensity", "external: contrast (intensity std)"]
    with caplog.at_level(logging.WARNING):
        assert enforce_gate(manifest, results, make_params()) is manifest
    assert any("external_drift [warning]" in r.getMessage() for r in caplog.records)


def test_external_shift_is_measured_in_train_standard_deviations():
    manifest = _with_external_site(brightness=3.0, contrast=0.0)
    tables = build_tables(manifest, gate_settings(make_params(), THREE_WAY))
    shift = tables["external_shift"].frame.set_index("key")["shift_in_train_sd"]
    train = manifest[manifest["split"] == "train"]
    site = manifest[manifest["split"] == "external"]
    expected = abs(site["mean"].mean() - train["mean"].mean()) / train["mean"].std(ddof=1)
    assert shift["external: mean intensity"] == pytest.approx(expected)
    assert shift["external: mean intensity"] < 1.0  # a small shift passes


def test_without_an_external_site_the_check_is_skipped():
    results, *_ = run_expectations(make_manifest(), make_params(), THREE_WAY)
    (skipped,) = [s for s in results["skipped"] if s["name"] == "external_drift"]
    assert "ingestion.external_dir is null" in skipped["reason"]
