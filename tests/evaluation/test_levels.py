"""Levels: images of one patient (breast, exam) made into one case, with its label by rule."""

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.evaluation.levels import (
    check_level_columns,
    image_groups,
    level_table,
)

NAMES = ["benign", "malignant"]


def _images():
    """Two patients, two breasts each, two views per breast; P2's left breast is malignant.

    The MLO view of P2/L is read as benign by the pathologist's label (a lesion seen in one
    view only): the breast's images disagree.
    """
    rows = [
        # path, group, laterality, view, label, p(malignant)
        ("a.png", "P1", "L", "CC", "benign", 0.1),
        ("b.png", "P1", "L", "MLO", "benign", 0.3),
        ("c.png", "P1", "R", "CC", "benign", 0.2),
        ("d.png", "P1", "R", "MLO", "benign", 0.2),
        ("e.png", "P2", "L", "CC", "malignant", 0.9),
        ("f.png", "P2", "L", "MLO", "benign", 0.5),
        ("g.png", "P2", "R", "CC", "benign", 0.2),
        ("h.png", "P2", "R", "MLO", "benign", 0.0),
    ]
    frame = pd.DataFrame(rows, columns=["path", "group", "laterality", "view", "label", "pm"])
    predictions = frame[["path", "label"]].assign(p_benign=1 - frame["pm"], p_malignant=frame["pm"])
    return predictions, frame[["path", "group", "laterality", "view"]]


def _level(columns, aggregation="mean", rule="any_positive", level="breast"):
    predictions, keys = _images()
    return level_table(predictions, keys, level, columns, NAMES, "malignant", aggregation, rule)


def test_a_breast_is_its_views_combined_with_any_positive_labels():
    table = _level(["group", "laterality"])
    assert table["key"].tolist() == ["P1/L", "P1/R", "P2/L", "P2/R"]
    assert table["p_malignant"].tolist() == pytest.approx([0.2, 0.2, 0.7, 0.1])
    assert table["label"].tolist() == ["benign", "benign", "malignant", "benign"]
    assert table["n_images"].tolist() == [2, 2, 2, 2]
    assert table["cluster"].tolist() == ["P1", "P1", "P2", "P2"]  # resampled by patient
    assert table["predicted"].tolist() == ["benign", "benign", "malignant", "benign"]
    assert np.allclose(table[["p_benign", "p_malignant"]].sum(axis=1), 1.0)


def test_the_aggregation_rule_is_the_one_home_s():
    noisy = _level(["group", "laterality"], aggregation="noisy_or")
    assert noisy["p_malignant"].iloc[2] == pytest.approx(1 - 0.1 * 0.5)
    assert _level(["group"], aggregation="max")["p_malignant"].tolist() == pytest.approx([0.3, 0.9])


def test_majority_labels_and_ties_go_to_the_positive_class():
    patient = _level(["group"], rule="majority", level="patient")
    # P2: 1 malignant of 4 images -> benign by majority, malignant by any_positive.
    assert patient["label"].tolist() == ["benign", "benign"]
    assert _level(["group"], level="patient")["label"].tolist() == ["benign", "malignant"]
    # P2/L: one malignant, one benign view: a tie, which goes to the positive class.
    breast = _level(["group", "laterality"], rule="majority")
    assert breast["label"].tolist() == ["benign", "benign", "malignant", "benign"]


def test_error_rule_names_the_keys_whose_images_disagree():
    with pytest.raises(ValueError, match=r"1 breast\(s\) do not share one label: P2/L\b"):
        _level(["group", "laterality"], rule="error")
    # Across patients: the CC views mix labels, the MLO views are all benign.
    with pytest.raises(ValueError, match=r"1 view\(s\) do not share one label: CC\. Fix"):
        _level(["view"], rule="error", level="view")
    assert len(_level(["group", "laterality", "view"], rule="error")) == 8  # one image each


def test_a_key_across_patients_is_its_own_cluster():
    table = _level(["view"], level="view")
    assert table["cluster"].tolist() == ["CC", "MLO"]


def test_level_columns_missing_or_empty_stop_with_the_column_and_share():
    _, keys = _images()
    check_level_columns(keys, {"patient": ["group"], "breast": ["group", "laterality"]})
    with pytest.raises(ValueError, match=r"levels\.exam needs the manifest column 'study'"):
        check_level_columns(keys, {"exam": ["group", "study"]})
    keys.loc[[1, 4, 6], "laterality"] = ["", None, " "]
    with pytest.raises(ValueError, match=r"'laterality' is empty on 3 of 8 images \(37\.5%\)"):
        check_level_columns(keys, {"breast": ["group", "laterality"]})


def test_image_groups_name_each_image_s_patient_and_refuse_an_unknown_image():
    predictions, keys = _images()
    assert image_groups(predictions.iloc[::-1], keys).tolist() == ["P2"] * 4 + ["P1"] * 4
    assert image_groups(predictions, None) is None
    unknown = pd.concat([predictions, predictions.head(1).assign(path="z.png")])
    with pytest.raises(KeyError, match=r"1 predicted image\(s\) are not in the validated"):
        image_groups(unknown, keys)
    assert np.array_equal(image_groups(predictions, keys), keys["group"].to_numpy())
