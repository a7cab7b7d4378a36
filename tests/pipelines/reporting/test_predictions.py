"""Reporting predicts through the serving model: the served and reported probabilities agree.

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
from breast_cancer_pipeline.pipelines.reporting.fits.conformal import serving_calibration
from breast_cancer_pipeline.pipelines.reporting.fits.operating_point import choose_operating_point
from breast_cancer_pipeline.pipelines.reporting.fits.recalibration import fit_calibration
from breast_cancer_pipeline.pipelines.reporting.nodes import package_model
from breast_cancer_pipeline.pipelines.reporting.predictions import (
    predict_split,
    predict_test_split,
    predict_val_split,
)
from tests.params import base_params

from .test_calibration import EVALUATION, META, NAMES, REPORTING


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
