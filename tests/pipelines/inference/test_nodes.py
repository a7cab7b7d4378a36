import base64

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.pipelines.inference.nodes import collect_images, predict_requests
from tests.params import base_params

from ._files import every_format, pillow_file

CONFIG = {
    "class_names": ["benign", "malignant", "normal"],
    "image_size": 24,
    "channels": 1,
    "color_mode": "grayscale",
    "positive_class": "malignant",
    "threshold": 0.3,
}


class FakeServingModel:
    """Returns p(malignant) = mean pixel / 255, the rest split between benign and normal."""

    config = CONFIG

    def __init__(self):
        self.batches = []

    def predict_proba(self, images):
        self.batches.append(images.shape)
        p = images.reshape(len(images), -1).mean(axis=1) / 255.0
        return np.stack([(1 - p) * 0.6, p, (1 - p) * 0.4], axis=1)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_every_format_is_scored_and_bad_rows_get_errors(tmp_path):
    files = every_format(tmp_path)
    cells = [_b64(v) for v in files.values()] + [_b64(b"not an image"), "%%%not base64%%%", None]
    model = FakeServingModel()
    out = predict_requests(
        pd.DataFrame({"image": cells}), model, base_params("inference", batch_size=3)
    )
    assert model.batches == [(3, 24, 24, 1), (1, 24, 24, 1)]  # 4 good rows in chunks of 3
    good, bad = out.iloc[:4], out.iloc[4:]
    assert (good["error"] == "").all()
    # The gradient's mean is ~127: p(malignant) ~0.5 >= 0.3 but benign (0.3) ~ malignant.
    np.testing.assert_allclose(good["p_malignant"].astype(float), 0.5, atol=0.03)
    assert (good["thresholded_label"] == "malignant").all()
    assert "not an image" in bad.iloc[0]["error"]
    assert "not valid base64" in bad.iloc[1]["error"]
    assert "no image in this row" in bad.iloc[2]["error"]
    assert bad[["label", "p_malignant", "thresholded_label"]].isna().all().all()
    assert bad.iloc[0]["p_malignant"] is None  # null in the served JSON, not NaN
    assert (out["threshold"] == 0.3).all()


def test_threshold_decides_the_call_not_the_argmax(tmp_path):
    dark = np.full((30, 30), 60, dtype=np.uint8)  # p(malignant) = 0.235 < 0.3
    grey = np.full((30, 30), 90, dtype=np.uint8)  # p = 0.35 < p(benign) 0.39: call malignant
    requests = pd.DataFrame(
        {"id": ["dark", "grey"], "image": [_b64(pillow_file(x, "PNG")) for x in (dark, grey)]}
    )
    out = predict_requests(
        requests, FakeServingModel(), base_params("inference", batch_size=8)
    ).set_index("id")
    assert out.loc["dark", "label"] == "benign"
    assert out.loc["dark", "thresholded_label"] == "benign"  # best of the non-positive classes
    assert out.loc["grey", "label"] == "benign"
    assert out.loc["grey", "thresholded_label"] == "malignant"


def test_missing_image_column_is_a_clear_error():
    with pytest.raises(ValueError, match="no 'image' column"):
        predict_requests(
            pd.DataFrame({"picture": ["x"]}),
            FakeServingModel(),
            base_params("inference", batch_size=1),
        )


def test_batch_command_reads_files_lazily_and_keeps_paths(tmp_path):
    files = every_format(tmp_path)
    files["notes.txt"] = b"hello"
    read = []

    def loader(name):
        def load():
            read.append(name)
            return files[name]

        return load

    requests = collect_images({name: loader(name) for name in files})
    assert read == []  # nothing read until scored
    out = predict_requests(
        requests, FakeServingModel(), base_params("inference", batch_size=2)
    ).set_index("path")
    assert sorted(read) == sorted(files)
    assert list(out.index) == sorted(files)
    assert out.loc["notes.txt", "error"].startswith("cannot decode 'notes.txt'")
    assert out.loc["a.png", "error"] == ""


def _score(pixels: np.ndarray, **params) -> pd.Series:
    requests = pd.DataFrame({"image": [_b64(pillow_file(pixels, "TIFF"))]})
    return predict_requests(requests, FakeServingModel(), base_params("inference", **params)).iloc[
        0
    ]


def test_max_pixels_turns_a_huge_image_into_a_row_error():
    big = np.zeros((40, 50), dtype=np.uint8)
    assert _score(big, max_pixels=2000)["error"] == ""
    refused = _score(big, max_pixels=1999)
    assert "decompression bomb" in refused["error"] and refused["p_malignant"] is None


def test_window_percentiles_decide_how_16_bit_images_are_reduced():
    """A 16-bit ramp: windowed on its lower half, the upper half saturates and p rises."""
    ramp = np.tile(np.linspace(1000, 60000, 48).astype(np.uint16), (48, 1))
    full = _score(ramp, window_percentiles=[0.0, 100.0])["p_malignant"]
    lower = _score(ramp, window_percentiles=[0.0, 50.0])["p_malignant"]
    assert full == pytest.approx(0.5, abs=0.03)
    assert lower == pytest.approx(0.75, abs=0.05)
