"""Reporting through the serving model: validation, temperature, thresholds, test, report.

The acceptance test of the evaluation issue: the served model (``predict_requests`` with a
base64 PNG) and reporting give identical test-time-augmented, recalibrated probabilities for
the same image.
"""

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breast_cancer_pipeline.evaluation import calibration as cal
from breast_cancer_pipeline.pipelines.reporting.calibration import (
    calibration_report,
    fit_calibration,
    held_out_source,
    predict_split,
    predict_test_split,
    predict_val_split,
    serving_calibration,
    temperature_interval_text,
)
from breast_cancer_pipeline.pipelines.reporting.nodes import (
    choose_operating_point,
    compute_metrics,
    package_model,
)
from breast_cancer_pipeline.pipelines.reporting.report import render_report
from tests.params import base_params

NAMES = ["benign", "malignant"]
META = {
    "class_names": NAMES,
    "backbone": "small_cnn",
    "image_size": 32,
    "channels": 1,
    "color_mode": "grayscale",
}
REPORTING = base_params("reporting", bootstrap={"n_resamples": 30, "seed": 0}, batch_size=7)
EVALUATION = base_params("evaluation", tta="flips_shifts", tta_passes=3, tta_shift=0.1)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _images(n: int, seed: int) -> tuple[list[bytes], np.ndarray]:
    """PNG files of 40 px (resized to 32 by the decoder); label 1 has a bright left patch."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    files = []
    for label in y:
        pixels = rng.integers(0, 120, (40, 40), dtype=np.uint8)
        if label:
            pixels[5:25, 2:14] = 230
        files.append(_png(pixels))
    return files, y


def _model_input(tmp_path):
    """Arrays decoded as ingestion and augmentation decode them, and the test PNGs."""
    from breast_cancer_pipeline.imaging import decode_image, resize_image

    out, files = {"class_names": np.array(NAMES)}, {}
    for split, n, seed in (("val", 24, 1), ("test", 10, 2)):
        data, y = _images(n, seed)
        paths = [f"{split}/{i}.png" for i in range(n)]
        for path, content in zip(paths, data, strict=True):
            (tmp_path / path).parent.mkdir(exist_ok=True)
            (tmp_path / path).write_bytes(content)
        out[f"x_{split}"] = np.stack(
            [
                resize_image(decode_image(d, p, color_mode="grayscale"), 32)
                for d, p in zip(data, paths, strict=True)
            ]
        )
        out[f"y_{split}"], out[f"paths_{split}"] = y, np.array(paths)
        files[split] = paths
    return out, files


@pytest.mark.slow
def test_served_and_reported_probabilities_are_identical(tmp_path):
    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset
    from breast_cancer_pipeline.modeling import build_classifier, set_seed
    from breast_cancer_pipeline.pipelines.inference.nodes import predict_requests

    set_seed(0)
    classifier = build_classifier("small_cnn", 2, 32, 1, None, {"dropout": 0.0})
    model_input, files = _model_input(tmp_path)

    # Reporting's order: uncalibrated validation, temperature, threshold, conformal, package.
    val_raw = predict_val_split(classifier, model_input, META, REPORTING, EVALUATION)
    fitted, val = fit_calibration(val_raw, META, EVALUATION, REPORTING)
    point = choose_operating_point(val, META, REPORTING)
    settings = serving_calibration(fitted, val, META, EVALUATION, base_params("inference"))
    dataset = ServingModelDataset(str(tmp_path / "serving_model"))
    dataset.save(package_model(classifier, META, point, settings)[0])
    served_model = dataset.load()
    assert served_model.config["tta"] == {"mode": "flips_shifts", "passes": 3, "shift": 0.1}
    assert served_model.config["temperature"] == pytest.approx(fitted["temperature"])
    assert served_model.config["calibration_floor"] == pytest.approx(fitted["floor"])
    assert fitted["temperature"] != pytest.approx(1.0, abs=1e-3)
    test, test_raw, test_plain = predict_test_split(served_model, model_input, REPORTING)

    # The served path: base64 PNG files in a request, decoded and scored by predict_requests.
    cells = [base64.b64encode((tmp_path / p).read_bytes()).decode() for p in files["test"]]
    answer = predict_requests(
        pd.DataFrame({"image": cells, "id": files["test"]}),
        served_model,
        base_params("inference", batch_size=4),
    )
    columns = [f"p_{c}" for c in NAMES]
    served = answer[columns].to_numpy(dtype=float)
    np.testing.assert_allclose(served, test[columns].to_numpy(), rtol=0, atol=1e-6)
    # Both are the views averaged, then recalibrated: not the bare classifier's output.
    bare = classifier.predict(model_input["x_test"], verbose=0)
    assert np.abs(served - bare).max() > 1e-3
    np.testing.assert_allclose(
        test[columns].to_numpy(),
        cal.apply_calibration(test_raw[columns].to_numpy(), fitted["temperature"], fitted["floor"]),
        atol=1e-6,
    )
    assert np.abs(test_plain[columns].to_numpy() - test[columns].to_numpy()).max() > 1e-4
    # Any other split (e.g. the external site) as served: the same probabilities.
    other = predict_split(served_model, model_input, "test", 3)
    np.testing.assert_allclose(other[columns].to_numpy(), test[columns].to_numpy(), atol=1e-6)
    threshold = settings["conformal"]["threshold"]
    expected_sets = [
        [c for c in NAMES if row[f"p_{c}"] >= threshold or c == row["predicted"]]
        for _, row in test.iterrows()
    ]
    assert answer["prediction_set"].tolist() == expected_sets
    # Deterministic views: the same request twice gives the same answer.
    again = predict_requests(pd.DataFrame({"image": cells}), served_model, base_params("inference"))
    np.testing.assert_array_equal(again[columns].to_numpy(dtype=float), served)


def _frame(labels, pm):
    pm = np.asarray(pm, dtype=float)
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(len(pm))], "label": labels})
    frame["predicted"] = np.where(pm >= 0.5, "malignant", "benign")
    frame["p_benign"], frame["p_malignant"] = 1 - pm, pm
    return frame


def test_the_temperature_is_fitted_on_out_of_fold_predictions_of_the_served_ensemble():
    assert held_out_source({"folds": 1, "ensemble": False}) == "validation"
    assert held_out_source({"folds": 3, "ensemble": False}) == "validation"
    assert held_out_source({"folds": 3, "ensemble": True}) == "out-of-fold"
    frame = _frame(["benign", "malignant"] * 10, np.linspace(0.1, 0.9, 20))
    evaluation = {**EVALUATION, "folds": 3, "ensemble": True}
    fitted, _ = fit_calibration(frame, META, evaluation, REPORTING)
    assert fitted["fitted_on"] == "out-of-fold" and fitted["n_val"] == 20


@pytest.mark.slow
def test_report_blocks_and_section():
    # Labels drawn from q; the model reports q sharpened (log-odds tripled): overconfident.
    rng = np.random.default_rng(0)
    q = rng.uniform(0.05, 0.95, 80)
    labels = np.where(rng.random(80) < q, "malignant", "benign").tolist()
    raw = _frame(labels, q**3 / (q**3 + (1 - q) ** 3))
    y = (raw["label"] == "malignant").to_numpy().astype(int)
    proba = raw[["p_benign", "p_malignant"]].to_numpy()
    fitted = cal.fit_calibration(proba, y, "temperature", REPORTING["bootstrap"])
    calibrated = raw.copy()
    calibrated[["p_benign", "p_malignant"]] = cal.apply_temperature(
        raw[["p_benign", "p_malignant"]].to_numpy(), fitted["temperature"]
    )
    settings = {
        "tta": {"mode": "flips", "passes": 2, "shift": 0.05},
        "conformal": {
            "method": "lac",
            "alpha": 0.1,
            "threshold": 0.3,
            "quantile_level": 0.9,
            "n_calibration": 80,
        },
    }
    blocks = calibration_report(calibrated, raw, raw, fitted, settings, META, REPORTING)
    c, t, s = blocks["calibration"], blocks["tta"], blocks["conformal"]
    assert fitted["temperature"] > 1
    assert c["temperature_ci_low"] < c["temperature"] < c["temperature_ci_high"]
    assert c["ece_positive_after"] < c["ece_positive_before"]
    assert c["brier_score_after"] < c["brier_score_before"]
    assert (
        c["ece_positive_after_ci_low"] <= c["ece_positive_after"] <= c["ece_positive_after_ci_high"]
    )
    assert t["auroc_gain"] == pytest.approx(t["auroc_with_tta"] - t["auroc_without_tta"])
    p = calibrated["p_malignant"].to_numpy()
    in_set = np.stack([1 - p >= 0.3, p >= 0.3], axis=1)
    assert s["coverage"] == pytest.approx(in_set[np.arange(80), y].mean())
    assert s["mean_set_size"] == pytest.approx(in_set.sum(axis=1).mean())
    assert sum(s["set_sizes"].values()) == 80

    point = {
        "threshold": 0.5,
        "rule": "youden",
        "positive_class": "malignant",
        "val_sensitivity": 1.0,
        "val_specificity": 1.0,
        "n_val": 80,
    }
    metrics, mlflow_metrics, _ = compute_metrics(
        calibrated, META, point, REPORTING, calibration_report=blocks
    )
    assert metrics["conformal"]["coverage"] == s["coverage"]
    assert mlflow_metrics["test.calibration.temperature"]["value"] == fitted["temperature"]
    manifest = pd.DataFrame({"label": labels, "split": "test", "group": range(80)})
    html, card = render_report(metrics, point, META, manifest, calibrated, REPORTING)
    assert "Conformal prediction sets" in html and f"T = {fitted['temperature']:.3f}" in html
    interval = f"{c['temperature_ci_low']:.3f}-{c['temperature_ci_high']:.3f}"
    assert f"95% interval over resamples of the 80 images: {interval}" in card
    spans_one = c["temperature_ci_low"] <= 1.0 <= c["temperature_ci_high"]
    assert ("it spans 1" in html) == spans_one
    assert "Two or more classes" in card and "Test-time augmentation: flips, 2 views" in card
    assert "also chose the training checkpoint" in html and "80 validation images" in card
    # Fitted on the fold ensemble's out-of-fold predictions: the report says so.
    blocks = calibration_report(
        calibrated, raw, raw, {**fitted, "fitted_on": "out-of-fold"}, settings, META, REPORTING
    )
    metrics, _, _ = compute_metrics(calibrated, META, point, REPORTING, calibration_report=blocks)
    html, card = render_report(metrics, point, META, manifest, calibrated, REPORTING)
    assert "predicted by the fold model that never saw it" in html
    assert "80 out-of-fold images" in card and "checkpoint" not in html
    assert "floor eps" not in html  # plain temperature scaling: no floor to explain
    # With a floor (temperature_floor): what it is, its interval and the cap it sets.
    floored = {**fitted, "method": "temperature_floor", "floor": 0.2}
    floored.update(floor_ci_low=0.1, floor_ci_high=0.3)
    blocks = calibration_report(calibrated, raw, raw, floored, settings, META, REPORTING)
    assert blocks["calibration"]["floor"] == 0.2
    metrics, mlflow_metrics, _ = compute_metrics(
        calibrated, META, point, REPORTING, calibration_report=blocks
    )
    assert mlflow_metrics["test.calibration.floor"]["value"] == 0.2
    html, card = render_report(metrics, point, META, manifest, calibrated, REPORTING)
    for text in (html, card):
        assert "floor eps = 0.200 (95% interval 0.100-0.300)" in text
        assert "no class is given more than 0.900" in text
    assert "follow. The operating threshold was chosen after it." in card
    # Without the blocks (a model reported before them), no section.
    metrics, _, _ = compute_metrics(calibrated, META, point, REPORTING)
    html, card = render_report(metrics, point, META, manifest, calibrated, REPORTING)
    assert "Conformal prediction sets" not in html and "Two or more classes" not in card


@pytest.mark.parametrize(
    ("low", "high", "said"),
    [
        (cal.TEMPERATURE_BOUNDS[0], 0.457, "lower end is the search's bound 0.05"),
        (2.0, cal.TEMPERATURE_BOUNDS[1], "upper end is the search's bound 20"),
        (0.3, 0.457, None),
    ],
)
def test_an_interval_end_on_the_search_bound_is_named_as_one(low, high, said):
    """A resample that separates perfectly drives T to the bound: the report says so."""
    text = temperature_interval_text(
        {"temperature_ci_low": low, "temperature_ci_high": high, "n_val": 69}, 0.95
    )
    assert text.startswith(f"95% interval over resamples of the 69 images: {low:.3f}-{high:.3f}")
    assert ("search's bound" in text) == (said is not None)
    if said:
        assert said in text and "not an estimate" in text
