"""Levels, subgroups and the decision curve: from the manifest and predictions to the report.

One synthetic hospital: patients with two breasts and two views each, a label per patient,
scores that share a patient's latent value; MLO views carry no signal (a planted weak
subgroup). The nodes run as the pipeline wires them.
"""

import base64

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.evaluation.levels import level_table
from breast_cancer_pipeline.pipelines.reporting.external import external_metrics
from breast_cancer_pipeline.pipelines.reporting.figures import (
    plot_decision_curve,
    plot_subgroups,
)
from breast_cancer_pipeline.pipelines.reporting.fits.operating_point import (
    choose_operating_point,
)
from breast_cancer_pipeline.pipelines.reporting.levels import (
    choose_level_operating_points,
    evaluation_keys,
    level_metrics,
    level_predictions,
)
from breast_cancer_pipeline.pipelines.reporting.net_benefit import decision_curves, thresholds_of
from breast_cancer_pipeline.pipelines.reporting.nodes import compute_metrics
from breast_cancer_pipeline.pipelines.reporting.report import render_report
from breast_cancer_pipeline.pipelines.reporting.subgroups import subgroup_metrics
from tests.params import base_params

NAMES = ["benign", "malignant"]
META = {"class_names": NAMES, "backbone": "small_cnn", "image_size": 8, "color_mode": "grayscale"}
LEVELS = {"patient": ["group"], "breast": ["group", "laterality"]}
EVALUATION = base_params("evaluation", levels=LEVELS)
REPORTING = base_params(
    "reporting",
    threshold="youden",
    bootstrap={"n_resamples": 40, "seed": 0},
    subgroups={"view": None, "patient_age": [50, 65]},
    figure_dpi=40,
)
PATIENTS = {"val": 16, "test": 30, "external": 10}


def _hospital(seed=0):
    """``(manifest, predictions by split)``: 4 images per patient (2 breasts x CC, MLO)."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in PATIENTS.items():
        for i in range(n):
            label = NAMES[i % 2]
            latent = rng.normal(1.5 if label == "malignant" else 0.0, 1.0)
            for side in "LR":
                for view in ("CC", "MLO"):
                    # The MLO views carry no signal: a subgroup the model fails.
                    logit = latent + rng.normal(0, 0.3) if view == "CC" else rng.normal(0.7, 1.0)
                    group = f"{'external/' if split == 'external' else ''}{split}{i:02d}"
                    rows.append(
                        (
                            f"{group}_{side}_{view}.png",
                            split,
                            group,
                            side,
                            view,
                            label,
                            40 + 3 * i,
                            1 / (1 + np.exp(-logit)),
                        )
                    )
    columns = ["path", "split", "group", "laterality", "view", "label", "patient_age", "pm"]
    frame = pd.DataFrame(rows, columns=columns)
    manifest = frame.drop(columns="pm").assign(manufacturer="", study="")
    predictions = {
        split: part[["path", "label"]]
        .assign(
            predicted=np.where(part["pm"] >= 0.5, "malignant", "benign"),
            p_benign=1 - part["pm"],
            p_malignant=part["pm"],
        )
        .reset_index(drop=True)
        for split, part in frame.groupby("split")
    }
    return manifest, predictions


@pytest.fixture(scope="module")
def hospital():
    manifest, predictions = _hospital()
    keys = evaluation_keys(manifest, EVALUATION, REPORTING)
    point = choose_operating_point(predictions["val"], META, REPORTING)
    table = level_predictions(
        predictions["val"],
        predictions["test"],
        predictions["external"],
        keys,
        META,
        EVALUATION,
        REPORTING,
    )
    points = choose_level_operating_points(
        predictions["val"], keys, point, META, EVALUATION, REPORTING
    )
    return manifest, predictions, keys, point, table, points


@pytest.fixture(scope="module")
def blocks(hospital):
    """The levels (with their MLflow metrics), subgroups and decision curve of the hospital."""
    _, predictions, keys, point, table, points = hospital
    levels = level_metrics(table, points, META, EVALUATION, REPORTING)
    subgroups = subgroup_metrics(
        predictions["test"], predictions["external"], keys, point, META, REPORTING
    )
    return levels, subgroups, decision_curves(predictions["test"], table, META, REPORTING)


def test_evaluation_keys_carry_patient_levels_and_subgroups(hospital):
    manifest, _, keys, *_ = hospital
    assert keys["path"].tolist() == manifest["path"].tolist()
    assert set(keys["subgroup:site"]) == {"internal", "external"}
    assert keys.loc[keys["path"] == "test00_L_CC.png", "subgroup:patient_age"].item() == "<50"
    assert keys.loc[keys["path"] == "test04_L_CC.png", "subgroup:patient_age"].item() == "50-65"
    assert set(keys["subgroup:view"]) == {"CC", "MLO"}


def test_a_missing_or_empty_level_column_stops_before_anything_is_measured():
    manifest, _ = _hospital()
    exam = base_params("evaluation", levels={"exam": ["group", "study"]})
    with pytest.raises(ValueError, match=r"'study' is empty on 224 of 224 images \(100\.0%\)"):
        evaluation_keys(manifest, exam, REPORTING)
    with pytest.raises(ValueError, match=r"levels\.breast needs the manifest column 'laterality'"):
        evaluation_keys(manifest.drop(columns="laterality"), EVALUATION, REPORTING)
    scanner = base_params("reporting", subgroups=["scanner"])
    with pytest.raises(ValueError, match=r"reporting\.subgroups names \['scanner'\]"):
        evaluation_keys(manifest, EVALUATION, scanner)


def test_each_level_s_threshold_is_the_image_rule_on_its_validation_cases(hospital):
    _, predictions, keys, _, _, points = hospital
    assert set(points) == {"aggregation", "positive_class", "levels"}
    assert points["aggregation"] == "mean" and points["positive_class"] == "malignant"
    for level, columns in LEVELS.items():
        val = level_table(
            predictions["val"], keys, level, columns, NAMES, "malignant", "mean", "any_positive"
        )
        expected = choose_operating_point(val, META, REPORTING)["threshold"]
        assert points["levels"][level] == {"columns": columns, "threshold": expected}


def test_a_level_without_both_classes_on_validation_takes_the_image_threshold(hospital):
    manifest, predictions, keys, point, *_ = hospital
    one_class = predictions["val"].assign(label="benign")
    one_class.loc[0, "label"] = "malignant"  # the image rule still works, patients all benign
    points = choose_level_operating_points(
        one_class,
        keys,
        point,
        META,
        base_params("evaluation", levels={"p": ["group"]}),
        {**REPORTING, "threshold": 0.9},
    )
    assert points["levels"]["p"]["threshold"] != point["threshold"]  # rule: any positive image
    majority = base_params("evaluation", levels={"p": ["group"]}, level_label="majority")
    points = choose_level_operating_points(one_class, keys, point, META, majority, REPORTING)
    assert points["levels"]["p"]["threshold"] == point["threshold"]


def test_levels_block_counts_patients_and_resamples_them(hospital, blocks):
    _, _, _, _, table, points = hospital
    levels, tracked = blocks[0]
    patient, breast = levels["patient"], levels["breast"]
    assert patient["n"] == PATIENTS["test"] and patient["n_images"] == 4 * PATIENTS["test"]
    assert breast["n"] == 2 * PATIENTS["test"]
    # Both resample patients: one row each, or both breasts of each together.
    assert patient["bootstrap"] == breast["bootstrap"] == "cluster"
    assert patient["threshold"] == points["levels"]["patient"]["threshold"]
    assert patient["external"]["n"] == PATIENTS["external"]
    assert patient["auroc_ci_low"] <= patient["auroc"] <= patient["auroc_ci_high"]
    from sklearn.metrics import roc_auc_score

    rows = table[(table["level"] == "patient") & (table["split"] == "test")]
    assert patient["auroc"] == pytest.approx(
        roc_auc_score(rows["label"] == "malignant", rows["p_malignant"])
    )
    called = rows["p_malignant"] >= patient["threshold"]
    positive = rows["label"] == "malignant"
    assert patient["sensitivity"] == pytest.approx(called[positive].mean())
    assert patient["ppv"] == pytest.approx(positive[called].mean())
    assert tracked["test.patient.auroc"]["value"] == pytest.approx(patient["auroc"])
    assert "external.breast.auroc" in tracked


def test_image_level_intervals_resample_patients(hospital):
    _, predictions, keys, point, *_ = hospital
    clustered, _, _ = compute_metrics(predictions["test"], META, point, REPORTING, keys=keys)
    plain, _, _ = compute_metrics(predictions["test"], META, point, REPORTING)
    assert clustered["bootstrap"] == "cluster" and plain["bootstrap"] == "image"
    assert clustered["n_test_patients"] == PATIENTS["test"]
    assert clustered["auroc"] == plain["auroc"]
    width = {
        name: found["auroc_ci_high"] - found["auroc_ci_low"]
        for name, found in (("cluster", clustered), ("image", plain))
    }
    assert width["cluster"] > width["image"]  # 4 correlated images per patient
    external = external_metrics(predictions["external"], META, point, REPORTING, keys)
    assert external["bootstrap"] == "cluster"


def test_subgroups_flag_the_planted_weak_view_and_hold_the_external_site(hospital, blocks):
    _, predictions, _, point, *_ = hospital
    block = blocks[1]
    columns = block["columns"]
    assert list(columns) == ["site", "view", "patient_age"]
    assert {k: v["n"] for k, v in columns["site"].items()} == {"internal": 120, "external": 40}
    assert {k: v["n"] for k, v in columns["view"].items()} == {"CC": 60, "MLO": 60}
    assert list(columns["patient_age"]) == ["<50", "50-65", ">=65"]
    assert block["overall"]["n"] == 120 and block["bootstrap"] == "cluster"
    assert "view = MLO" in block["below_overall"]
    assert "view = CC" not in block["below_overall"]
    mlo = columns["view"]["MLO"]
    assert mlo["auroc_ci_high"] < block["overall"]["auroc"] < columns["view"]["CC"]["auroc"]
    test = predictions["test"]
    cc = test[test["path"].str.endswith("_CC.png")]
    called = cc["p_malignant"] >= point["threshold"]
    assert columns["view"]["CC"]["sensitivity"] == pytest.approx(
        called[cc["label"] == "malignant"].mean()
    )


def test_decision_curve_table_and_where_the_model_helps(blocks):
    curve, block = blocks[2]
    assert list(curve.columns) == [
        "threshold",
        "image",
        "image_treat_all",
        "patient",
        "patient_treat_all",
        "breast",
        "breast_treat_all",
        "treat_none",
    ]
    assert curve["threshold"].tolist() == pytest.approx(np.arange(1, 100) / 100)
    # Half the patients are malignant: treat-all is 0.5 - 0.5 t / (1 - t), 0 at t = 0.5.
    at_half = curve.loc[curve["threshold"] == 0.5]
    assert at_half["patient_treat_all"].item() == pytest.approx(0.0)
    assert block["patient"]["prevalence"] == 0.5 and block["patient"]["n"] == 30
    assert block["image"]["helps_from"] is not None
    first, last = block["patient"]["helps"][0]
    helps = curve.set_index("threshold").loc[first, "patient"]
    assert helps > max(curve.set_index("threshold").loc[first, "patient_treat_all"], 0.0)
    assert block["thresholds"] == {"low": 0.01, "high": 0.99, "step": 0.01}
    assert thresholds_of({"low": 0.1, "high": 0.3, "step": 0.1}).tolist() == [0.1, 0.2, 0.3]


def test_report_and_model_card_show_levels_subgroups_and_the_decision_curve(hospital, blocks):
    manifest, predictions, keys, point, *_ = hospital
    (levels, _), subgroups, (curve, summary) = blocks
    metrics, _, _ = compute_metrics(
        predictions["test"],
        META,
        point,
        REPORTING,
        external_metrics(predictions["external"], META, point, REPORTING, keys),
        keys=keys,
        levels=levels,
        subgroups=subgroups,
        decision_curve=summary,
    )
    assert metrics["levels"]["patient"]["n"] == 30 and "view" in metrics["subgroups"]["columns"]
    forest, decision = (
        plot_subgroups(metrics, REPORTING),
        plot_decision_curve(curve, metrics, REPORTING),
    )
    html, card = render_report(
        metrics,
        point,
        META,
        manifest,
        predictions["test"],
        REPORTING,
        subgroups=forest,
        decision_curve=decision,
    )
    section = html.split('id="levels"', 1)[1].split('id="subgroups"', 1)[0]
    assert "<th>image</th><th>patient</th><th>breast</th>" in section
    assert "External site" in section and "cluster bootstrap" in section
    assert "patients are resampled, stratified by their label" in section
    assert "The AUROC interval of view = MLO lies wholly below" in html
    assert base64.b64encode(forest).decode() in html
    assert base64.b64encode(decision).decode() in html
    assert "model helps at thresholds" in html
    assert "## Decisions per image and per level" in card and "## Subgroups" in card
    assert "view = MLO lies wholly below" in card and "## Net benefit" in card
    assert "cluster bootstrap interval" in html  # the headline AUROC says which
    failures = html.split("Known failure cases", 1)[1]
    assert "Subgroup view = MLO: its AUROC interval lies wholly below" in failures
