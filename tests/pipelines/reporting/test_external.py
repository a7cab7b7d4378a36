"""The external test site in reporting, and its isolation from every training node."""

import importlib

import numpy as np
import pandas as pd
import pytest
from kedro.pipeline import Pipeline

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.pipeline_registry import TRAINING_STAGES, as_stage
from breast_cancer_pipeline.pipelines.augmentation.nodes import (
    prepare_external_input,
    prepare_model_input,
)
from breast_cancer_pipeline.pipelines.backbone_selection import (
    create_pipeline as backbone_selection,
)
from breast_cancer_pipeline.pipelines.finetune import create_pipeline as finetune
from breast_cancer_pipeline.pipelines.reporting.external import external_metrics
from breast_cancer_pipeline.pipelines.reporting.nodes import compute_metrics
from breast_cancer_pipeline.pipelines.reporting.predictions import (
    predict_external_split,
    predict_test_split,
)
from breast_cancer_pipeline.pipelines.reporting.report import render_report
from breast_cancer_pipeline.pipelines.reporting.sections import comparison_rows
from tests.params import base_params

from ..ingestion.helpers import image_bytes, ingest, params, two_classes, write_tree
from .test_report import META, PARAMS, POINT, _manifest, _predictions

NAMES = META["class_names"]


class _Scores:
    """A stand-in serving model: p(malignant) is the mean pixel of the image / 255."""

    class_names = META["class_names"]
    config = {"tta": {"mode": "off"}}
    attention_head = None  # a whole-image model: no tiles to attend over

    def averaged_proba(self, x):
        p = np.asarray(x, dtype=float).mean(axis=(1, 2, 3)) / 255.0
        return np.stack([1 - p, p], axis=1)

    def calibrate(self, proba):
        return proba


def _arrays(split, pixels, labels):
    x = np.stack([np.full((4, 4, 1), v, np.uint8) for v in pixels])
    return {
        "class_names": np.array(NAMES),
        f"x_{split}": x,
        f"y_{split}": np.array([NAMES.index(label) for label in labels]),
        f"paths_{split}": np.array([f"{split}/{i}.png" for i in range(len(pixels))]),
    }


def _external_predictions():
    """p(malignant) 0.8, 0.3 for malignant; 0.6, 0.1, 0.2 for benign (AUROC 5/6)."""
    pixels = [204, 77, 153, 26, 51]
    labels = ["malignant", "malignant", "benign", "benign", "benign"]
    return predict_external_split(_Scores(), _arrays("external", pixels, labels), PARAMS)


def test_external_split_is_predicted_by_the_test_prediction_function():
    pixels, labels = [204, 77, 153], ["malignant", "malignant", "benign"]
    external = predict_external_split(_Scores(), _arrays("external", pixels, labels), PARAMS)
    test = predict_test_split(_Scores(), _arrays("test", pixels, labels), PARAMS)[0]
    assert external.columns.tolist() == test.columns.tolist()
    np.testing.assert_array_equal(external["p_malignant"], test["p_malignant"])
    assert external["path"].tolist() == ["external/0.png", "external/1.png", "external/2.png"]


def test_external_metrics_at_the_validation_threshold_with_intervals():
    frame = _external_predictions()
    block = external_metrics(frame, META, POINT, PARAMS)  # threshold 0.5, from validation
    assert block["n"] == 5
    assert block["auroc"] == pytest.approx(5 / 6, abs=1e-6)
    assert block["threshold"] == 0.5
    # p >= 0.5: malignant 0.8 (TP), 0.3 (FN); benign 0.6 (FP), 0.1, 0.2 (TN)
    assert (block["tp"], block["fn"], block["fp"], block["tn"]) == (1, 1, 1, 2)
    assert block["sensitivity"] == pytest.approx(0.5)
    assert block["specificity"] == pytest.approx(2 / 3)
    assert block["auroc_ci_low"] <= block["auroc"] <= block["auroc_ci_high"]
    y = (frame["label"] == "malignant").to_numpy().astype(int)
    proba = frame[["p_benign", "p_malignant"]].to_numpy()
    assert block["brier_score"] == pytest.approx(m.brier_score(y, proba))
    assert {"ece_positive", "brier_score_ci_low", "brier_score_ci_high"} <= set(block)


def test_metrics_json_and_mlflow_carry_the_external_block_or_null():
    block = external_metrics(_external_predictions(), META, POINT, PARAMS)
    with_site, tracked, _ = compute_metrics(_predictions(), META, POINT, PARAMS, block)
    assert with_site["external"]["auroc"] == pytest.approx(5 / 6, abs=1e-6)
    assert tracked["external.auroc"]["value"] == pytest.approx(5 / 6, abs=1e-6)
    assert tracked["external.n"]["value"] == 5.0
    assert tracked["test.auroc"]["value"] == with_site["auroc"]
    without, tracked_without, _ = compute_metrics(_predictions(), META, POINT, PARAMS, {})
    assert without["external"] is None
    assert not any(key.startswith("external.") for key in tracked_without)


def test_no_external_site_gives_no_rows_and_an_empty_block():
    arrays = {
        "class_names": np.array(NAMES),
        "x_external": np.empty((0, 4, 4, 1), np.uint8),
        "y_external": np.empty(0, np.int32),
        "paths_external": np.empty(0, np.str_),
    }
    frame = predict_external_split(None, arrays, PARAMS)  # the model is not even called
    assert frame.empty and "p_malignant" in frame.columns
    assert external_metrics(frame, META, POINT, PARAMS) == {}


def test_report_shows_internal_and_external_side_by_side_with_intervals():
    block = external_metrics(_external_predictions(), META, POINT, PARAMS)
    metrics = compute_metrics(_predictions(), META, POINT, PARAMS, block)[0]
    rows = comparison_rows(metrics)
    assert rows[0] == ("Images", "8", "5")
    name, internal, external = rows[1]
    assert name == "AUROC" and external.startswith("0.833 [") and internal.count("[") == 1
    html, card = render_report(metrics, POINT, META, _manifest(), _predictions(), PARAMS)
    assert "<h2>External test site</h2>" in html
    assert "<th>internal test</th><th>external site</th>" in html
    assert "## External test site" in card
    assert "| Images | 8 | 5 |" in card
    plain = compute_metrics(_predictions(), META, POINT, PARAMS)[0]
    assert comparison_rows(plain) is None
    html, card = render_report(plain, POINT, META, _manifest(), _predictions(), PARAMS)
    assert "External test site" not in html and "External test site" not in card


# ------------------------------------------------------------------ isolation from training


PIPELINES = "breast_cancer_pipeline.pipelines"
#: The datasets that hold the external site's images or what was computed from them alone.
HOLDING_EXTERNAL = {
    "external_model_input",
    "external_predictions",
    "external_metrics",
    "level_predictions",
}


def _training_inputs():
    """Every dataset a node of backbone selection or fine-tuning reads."""
    return {name for p in (backbone_selection(), finetune()) for n in p.nodes for name in n.inputs}


def test_no_training_node_reads_a_dataset_holding_external_images():
    inputs = _training_inputs()
    assert "model_input" in inputs  # what they do read
    assert not inputs & HOLDING_EXTERNAL
    # In the whole run, only the external site's own reporting nodes read them (not the
    # threshold, calibration or selection).
    default = sum(
        (
            as_stage(name, importlib.import_module(f"{PIPELINES}.{name}").create_pipeline())
            for name in TRAINING_STAGES
        ),
        Pipeline([]),
    )
    readers = {n.name for n in default.nodes if set(n.inputs) & HOLDING_EXTERNAL}
    assert readers == {
        "reporting.predict_external_split",
        "reporting.external_metrics",
        "reporting.compute_metrics",  # copies the block into metrics.json
        "reporting.level_predictions",  # the levels of val, test and the external site
        "reporting.level_metrics",  # the levels measured on test and the external site
        "reporting.subgroup_metrics",  # the external site is a subgroup of `site`
        "reporting.decision_curves",  # reads the test rows of level_predictions
    }
    nodes = {n.name: n for n in default.nodes}
    assert nodes["reporting.choose_operating_point"].inputs[0] == "val_predictions"
    # Each level's threshold too: from the validation predictions, not level_predictions.
    assert nodes["reporting.choose_level_operating_points"].inputs[0] == "val_predictions"


def test_external_images_reach_the_manifest_as_external_and_never_the_training_arrays(tmp_path):
    src = write_tree(tmp_path / "source", two_classes(10))
    site = {
        f"{label}/{i}.png": image_bytes(700 + 10 * c + i)
        for c, label in enumerate("ab")
        for i in range(3)
    }
    ingested = ingest(src, tmp_path / "out", params(), external=write_tree(tmp_path / "site", site))
    manifest = ingested.manifest
    external_paths = set(manifest.loc[manifest["split"] == "external", "path"])
    assert external_paths == {f"external/{k}" for k in site}
    assert set(manifest.loc[manifest["path"].str.startswith("external/"), "split"]) == {"external"}
    images = ingested.store.load()
    model_input = prepare_model_input(images, manifest, base_params("augmentation", image_size=16))
    trained_on = {str(p) for key, v in model_input.items() if key.startswith("paths_") for p in v}
    assert trained_on and not trained_on & external_paths
    assert len(trained_on) == (manifest["split"] != "external").sum()
    site_input = prepare_external_input(
        images, manifest, base_params("augmentation", image_size=16)
    )
    assert set(site_input["paths_external"]) == external_paths
    assert site_input["x_external"].shape == (6, 16, 16, 1)
    assert site_input["class_names"].tolist() == model_input["class_names"].tolist()


def test_an_external_class_the_model_lacks_is_refused_naming_label_map():
    manifest = pd.DataFrame(
        {
            "path": ["a/1.png", "b/1.png", "external/c/1.png"],
            "label": ["a", "b", "c"],
            "split": ["train", "train", "external"],
            "channels": [1, 1, 1],
        }
    )
    with pytest.raises(ValueError, match="classes the training data lacks: c.*label_map"):
        prepare_external_input({}, manifest, base_params("augmentation", image_size=8))
