"""The descriptive columns a path or a DICOM header gives (shared by ingestion and inference)."""

import io
import math

import numpy as np
import pydicom
import pytest
from PIL import Image

from breast_cancer_pipeline.columns import (
    age_in_years,
    check_tag,
    clean_value,
    compile_pattern,
    dicom_columns,
    path_columns,
    read_dicom_header,
)
from tests.pipelines.ingestion.helpers import dicom_image

BREAKHIS = {
    "group": r"SOB_[BM]_[A-Z]+-(\d+-[0-9A-Z]+)-",
    "magnification": r"-(\d+)-\d+\.png$",
    "view": {"tag": "PatientID", "pattern": "_(CC|MLO)$"},  # a tag: not read from the path
}


def test_path_patterns_read_the_relative_path_and_skip_tag_patterns():
    rel = "benign/SOB/adenosis/SOB_B_A_14-22549AB/40X/SOB_B_A-14-22549AB-40-001.png"
    assert path_columns(rel, BREAKHIS) == {"group": "14-22549AB", "magnification": "40"}


def test_a_pattern_that_does_not_match_gives_an_empty_value():
    values = path_columns("benign/other.png", {**BREAKHIS, "patient_age": r"_(\d+)y\."})
    assert values["group"] == "" and values["magnification"] == ""
    assert math.isnan(values["patient_age"])


def test_laterality_and_view_are_read_alike_from_every_source():
    patterns = {"laterality": r"_(left|right|L|R)_", "view": r"_(cc|mlo)\."}
    assert path_columns("a/P1_left_cc.png", patterns) == {"laterality": "L", "view": "CC"}
    assert path_columns("a/P1_R_mlo.png", patterns) == {"laterality": "R", "view": "MLO"}
    assert clean_value("manufacturer", "  HOLOGIC, Inc. ") == "HOLOGIC, Inc."


@pytest.mark.parametrize(
    ("text", "years"),
    [("057Y", 57.0), ("018M", 1.5), ("052W", 52 * 7 / 365.25), ("", math.nan), (None, math.nan)],
)
def test_dicom_age_strings_become_years(text, years):
    assert age_in_years(text) == pytest.approx(years, nan_ok=True)
    assert age_in_years("57") == 57.0 and math.isnan(age_in_years("about 60"))


def _header(**tags) -> pydicom.Dataset:
    return read_dicom_header(dicom_image(0, **tags), "x.dcm")


def test_the_dicom_tags_fill_the_descriptive_columns():
    header = _header(
        Laterality="L",
        ImageLaterality="R",  # the image's own laterality wins over the series'
        ViewPosition="MLO",
        Manufacturer="HOLOGIC, Inc.",
        PatientAge="063Y",
        StudyInstanceUID="1.2.3",
    )
    assert dicom_columns(header, {}) == {
        "laterality": "R",
        "view": "MLO",
        "manufacturer": "HOLOGIC, Inc.",
        "patient_age": 63.0,
        "study": "1.2.3",
    }


def test_tag_patterns_read_a_tag_and_replace_the_standard_one():
    header = _header(Laterality="R", PatientID="Mass-Test_P_00173_RIGHT_CC", ViewPosition="XX")
    patterns = {
        "group": {"tag": "PatientID", "pattern": r"(P_\d+)"},
        "view": {"tag": "PatientID", "pattern": "_(CC|MLO)$"},
        "abnormality": {"tag": "PatientID", "pattern": "^(Mass|Calc)-"},
        "magnification": r"-(\d+)-",  # a path pattern: not read from the header
    }
    values = dicom_columns(header, patterns)
    assert values["group"] == "P_00173" and values["view"] == "CC"
    assert values["abnormality"] == "Mass" and values["laterality"] == "R"
    assert values["manufacturer"] == "" and math.isnan(values["patient_age"])
    assert "magnification" not in values
    missing = dicom_columns(_header(), {"view": {"tag": "PatientID", "pattern": "_(CC)$"}})
    assert missing["view"] == "" and missing["study"] == ""


def test_only_dicom_files_have_a_header():
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, format="PNG")
    assert read_dicom_header(png.getvalue(), "a.png") is None
    assert read_dicom_header(png.getvalue(), "no_extension") is None
    preamble_free = dicom_image(1, PatientID="P7")[128 + 4 :]  # no preamble, no DICM marker
    assert read_dicom_header(preamble_free, "scan.dcm") is not None
    assert read_dicom_header(preamble_free, "scan.jpg") is None


def test_patterns_and_tags_are_checked():
    assert compile_pattern(r"_(CC|MLO)$").groups == 1
    with pytest.raises(ValueError, match="exactly one capture group"):
        compile_pattern(r"_(CC)_(MLO)")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        compile_pattern("(")
    assert check_tag("PatientID") == "PatientID"
    with pytest.raises(ValueError, match="'PatientId' is not a DICOM keyword"):
        check_tag("PatientId")
