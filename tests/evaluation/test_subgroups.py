"""Subgroup columns and numeric bands (reporting.subgroups)."""

import numpy as np
import pandas as pd

from breast_cancer_pipeline.evaluation.subgroups import (
    band_names,
    bands,
    site_of,
    subgroup_columns,
    subgroup_values,
)


def test_bands_are_half_open_with_open_ends_and_unknown():
    ages = pd.Series([39.9, 40, 49, 50, 70, 85, np.nan, "", "n/a", "61"])
    assert bands(ages, [40, 50, 60, 70]).tolist() == [
        "<40",
        "40-50",
        "40-50",
        "50-60",
        ">=70",
        ">=70",
        "unknown",
        "unknown",
        "unknown",
        "60-70",
    ]
    assert band_names([40.0, 50.5]) == ["<40", "40-50.5", ">=50.5"]


def test_subgroup_setting_as_list_or_mapping_always_starts_with_site():
    assert subgroup_columns(["view", "manufacturer"]) == {
        "site": None,
        "view": None,
        "manufacturer": None,
    }
    assert subgroup_columns({"patient_age": [40, 60], "view": None}) == {
        "site": None,
        "patient_age": [40.0, 60.0],
        "view": None,
    }
    assert subgroup_columns([]) == {"site": None}


def test_values_as_text_with_empty_as_unknown_and_the_site_from_the_split():
    values = pd.Series(["40", 100, None, "  ", "GE"])
    assert subgroup_values(values, None).tolist() == ["40", "100", "unknown", "unknown", "GE"]
    split = pd.Series(["test", "external", "val"])
    assert site_of(split).tolist() == ["internal", "external", "internal"]
