"""Descriptive columns in the manifest: DICOM tags, path and tag patterns, CSV extra columns."""

import math

import pandas as pd
import pytest

from breast_cancer_pipeline.manifest import DESCRIPTIVE_COLUMNS, MANIFEST_COLUMNS
from breast_cancer_pipeline.param_schema import ParameterError, validate_block

from .helpers import dicom_image, image_bytes, ingest, params, write_tree


def _breakhis(n_patients: int = 4) -> dict[str, bytes]:
    """BreakHis names: patient id and magnification in the file name, 4 images per patient."""
    files, seed = {}, 0
    for label, code in (("benign", "B_A"), ("malignant", "M_DC")):
        for p in range(n_patients):
            for magnification in (40, 100):
                for i in (1, 2):
                    seed += 1
                    name = f"SOB_{code}-14-{label[0]}{p}-{magnification}-{i:03d}.png"
                    files[f"{label}/{magnification}X/{name}"] = image_bytes(seed)
    return files


BREAKHIS_PATTERNS = {
    "group": r"SOB_[BM]_[A-Z]+-(\d+-[a-z]\d+)-",
    "magnification": r"-(\d+)-\d+\.png$",
    "laterality": r"_([LR])\.png$",  # no BreakHis name has one: empty
}


def test_path_patterns_set_the_group_and_new_columns(src, out):
    run_params = params(column_patterns=BREAKHIS_PATTERNS)
    manifest = ingest(write_tree(src, _breakhis()), out, run_params).manifest
    assert list(manifest.columns) == [*MANIFEST_COLUMNS, *DESCRIPTIVE_COLUMNS, "magnification"]
    assert manifest.groupby("group").size().to_dict() == {
        f"14-{c}{p}": 4 for c in "bm" for p in range(4)
    }
    assert manifest.groupby("group")["split"].nunique().max() == 1  # whole patients
    assert manifest.groupby("magnification").size().to_dict() == {"100": 16, "40": 16}
    assert (manifest[["laterality", "view", "manufacturer", "study"]] == "").all().all()
    assert manifest["patient_age"].isna().all()


def test_without_parameters_every_manifest_has_the_descriptive_columns(src, out):
    manifest = ingest(write_tree(src, _breakhis(2)), out, params()).manifest
    assert list(manifest.columns) == [*MANIFEST_COLUMNS, *DESCRIPTIVE_COLUMNS]
    assert manifest["group"].nunique() == len(manifest)  # no group pattern: one per image


def _mammography(prefix: str, patients: range) -> dict[str, bytes]:
    """Tiny DICOMs named by number, their patient and view in PatientID, CBIS-DDSM style."""
    files = {}
    for p in patients:
        for k, (side, view) in enumerate([("LEFT", "CC"), ("LEFT", "MLO"), ("RIGHT", "CC")]):
            label = "malignant" if p % 2 else "benign"
            tags = {
                "PatientID": f"Mass-Test_P_{p:05d}_{side}_{view}",
                "Laterality": side[0],
                "StudyInstanceUID": f"1.2.{p}.{k}",
                "Manufacturer": "LUMISYS",
            }
            if p < 3:
                tags["PatientAge"] = f"0{50 + p}Y"
            files[f"{label}/{prefix}{p}-{k}.dcm"] = dicom_image(10 * p + k, **tags)
    return files


def test_dicom_tags_and_tag_patterns_fill_the_columns(src, out, tmp_path):
    external = write_tree(tmp_path / "site_b", _mammography("x", range(20, 24)))
    files = _mammography("", range(10))
    files["benign/plain.png"] = image_bytes(99)  # not DICOM: empty columns
    patterns = {
        "group": {"tag": "PatientID", "pattern": r"(P_\d+)"},
        "view": {"tag": "PatientID", "pattern": "_(CC|MLO)$"},
    }
    result = ingest(write_tree(src, files), out, params(column_patterns=patterns), external)
    manifest = result.manifest.set_index("source_path")
    first = manifest.loc["benign/0-1.dcm"]
    assert (first["group"], first["laterality"], first["view"]) == ("P_00000", "L", "MLO")
    assert (first["manufacturer"], first["study"], first["patient_age"]) == (
        "LUMISYS",
        "1.2.0.1",
        50.0,
    )
    assert math.isnan(manifest.loc["malignant/5-0.dcm", "patient_age"])
    assert manifest.loc["external/malignant/x21-2.dcm", "group"] == "external/P_00021"
    plain = manifest.loc["benign/plain.png"]
    assert plain["group"] == "benign/plain.png" and plain["view"] == plain["laterality"] == ""
    dicoms = manifest.drop(index="benign/plain.png")
    assert dicoms.groupby("group").size().eq(3).all() and dicoms["group"].nunique() == 14
    assert dicoms.groupby(["group", "laterality"])["view"].nunique().value_counts().to_dict() == {
        2: 14,  # the left breast: CC and MLO
        1: 14,  # the right: CC only
    }
    assert result.manifest.groupby("group")["split"].nunique().max() == 1


def _cbis_table(src) -> pd.DataFrame:
    files, rows = {}, []
    for p in range(6):
        for view in ("CC", "MLO"):
            path = f"P_{p:05d}_{view}.dcm"
            files[path] = dicom_image(10 * p + len(view), ViewPosition="XX")
            rows.append(
                {
                    "patient_id": f"P_{p:05d}",
                    "left or right breast": "RIGHT" if p % 2 else "LEFT",
                    "image view": view,
                    "breast_density": str(1 + p % 4) if p else "",
                    "pathology": "MALIGNANT" if p % 2 else "BENIGN",
                    "image file path": path,
                }
            )
    write_tree(src, files)
    return pd.DataFrame(rows)


CBIS_CSV = {
    "path": "t.csv",
    "path_column": "image file path",
    "label_column": "pathology",
    "group_column": "patient_id",
}


def test_csv_extra_columns_copy_table_columns(src, out):
    _cbis_table(src).to_csv(src / "t.csv", index=False)
    extra = {"view": "image view", "laterality": "left or right breast"}
    extra["density"] = "breast_density"
    manifest = ingest(src, out, params(csv={**CBIS_CSV, "extra_columns": extra})).manifest
    rows = manifest.set_index("source_path")
    assert list(manifest.columns)[-1] == "density"
    assert rows.loc["P_00001_MLO.dcm", ["view", "laterality", "density"]].tolist() == [
        "MLO",  # the table's column, not the header's ViewPosition
        "R",
        "2",
    ]
    assert rows.loc["P_00000_CC.dcm", "density"] == ""  # an empty cell: an empty value


def test_a_missing_extra_column_names_the_parameter_and_the_table_columns(src, out):
    _cbis_table(src).to_csv(src / "t.csv", index=False)
    run_params = params(csv={**CBIS_CSV, "extra_columns": {"density": "breast density"}})
    with pytest.raises(
        ValueError, match=r"ingestion\.csv\.extra_columns\.density is 'breast density'.*columns"
    ):
        ingest(src, out, run_params)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"column_patterns": {"magnification": r"-\d+-"}}, "'magnification': must have exactly"),
        ({"column_patterns": {"view": "(CC|MLO"}}, "'view': not a valid regular expression"),
        (
            {"column_patterns": {"view": {"tag": "PatientId", "pattern": "_(CC)$"}}},
            "'view': 'PatientId' is not a DICOM keyword",
        ),
        ({"column_patterns": {"view": {"pattern": "_(CC)$"}}}, "'view': give a regex"),
        ({"column_patterns": {"label": "^([a-z]+)/"}}, "'label' is a column ingestion sets"),
        (
            {"column_patterns": {"group": "(P\\d+)"}, "group_pattern": "(P\\d+)"},
            "column_patterns.group and ingestion.group_pattern both set",
        ),
        (
            {"column_patterns": {"group": "(P\\d+)"}, "csv": {"group_column": "patient"}},
            "column_patterns.group and ingestion.csv.group_column both set",
        ),
        (
            {"column_patterns": {"view": "_(CC)_"}, "csv": {"extra_columns": {"view": "v"}}},
            "both set ['view']",
        ),
        ({"csv": {"extra_columns": {"group": "patient"}}}, "ingestion.csv.group_column"),
        ({"csv": {"extra_columns": {"split": "fold"}}}, "'split' is a column ingestion sets"),
    ],
)
def test_bad_column_parameters_are_named(overrides, message):
    with pytest.raises(ParameterError) as info:
        validate_block("ingestion", params(**overrides))
    assert message in str(info.value)
    assert "ingestion." in str(info.value)
