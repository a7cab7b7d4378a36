import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.decode_budget import DecodeBudget
from breast_cancer_pipeline.imaging import decode_cost
from breast_cancer_pipeline.pipelines.inference.nodes import collect_images, predict_requests
from tests.params import base_params

from ._files import dicom_header_only, every_format, pillow_file

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
    ood = None  # packaged without an out-of-distribution score

    def __init__(self):
        self.batches = []

    def predict_with_ood(self, images):
        return self.predict_proba(images), None

    def predict_proba(self, images):
        self.batches.append(images.shape)
        p = images.reshape(len(images), -1).mean(axis=1) / 255.0
        return np.stack([(1 - p) * 0.6, p, (1 - p) * 0.4], axis=1)

    def prediction_sets(self, proba):
        # The classes with p >= 0.25, as a conformal threshold of 0.25 would give.
        return [
            [c for c, v in zip(CONFIG["class_names"], row, strict=True) if v >= 0.25]
            for row in proba
        ]


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
    # Written for the caller of the API: ingestion's fixes are not theirs.
    assert not out["error"].str.contains("ingestion").any()
    assert (
        bad["error"]
        .str.endswith("base64-encoded in the 'image' column, e.g. $(base64 -w0 image.png)")
        .all()
    )
    assert bad[["label", "p_malignant", "thresholded_label"]].isna().all().all()
    # p(malignant) ~0.5, p(benign) ~0.3, p(normal) ~0.2: the set holds the first two.
    assert good["prediction_set"].tolist() == [["benign", "malignant"]] * 4
    assert bad["prediction_set"].isna().all()
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


def test_missing_image_column_is_an_http_400_with_just_the_message():
    from mlflow.exceptions import MlflowException

    with pytest.raises(ValueError, match="no 'image' column \\(it has \\['picture'\\]\\)") as info:
        predict_requests(
            pd.DataFrame({"picture": ["x"]}),
            FakeServingModel(),
            base_params("inference", batch_size=1),
        )
    error = info.value
    assert isinstance(error, MlflowException) and error.get_http_status_code() == 400
    # MLflow's server prefixes the whole request to the message; the caller does not get it.
    error.message = f"Failed to predict data '{pd.DataFrame({'picture': ['x']})}'. {error.message}"
    body = json.loads(error.serialize_as_json())
    assert body == {"error_code": "INVALID_PARAMETER_VALUE", "message": str(error.args[0])}
    assert body["message"].startswith("the request has no 'image' column")


def test_a_request_that_is_not_a_table_gets_the_same_message():
    with pytest.raises(ValueError, match="no 'image' column"):
        predict_requests(np.array([1, 2]), FakeServingModel(), base_params("inference"))


def _limits(**serving):
    return base_params("inference", serving=serving)


@pytest.mark.parametrize(
    ("serving", "message"),
    [
        ({"max_images": 2}, "holds 3 images, more than inference.serving.max_images = 2"),
        ({"max_request_bytes": 2000}, "more than inference.serving.max_request_bytes = 2,000"),
    ],
)
def test_requests_over_the_limits_are_refused_whole_with_413(serving, message):
    cells = [_b64(pillow_file(np.zeros((30, 30), dtype=np.uint8), "BMP"))] * 3  # 3 x 1.5 kB
    model = FakeServingModel()
    with pytest.raises(ValueError, match=message) as info:
        predict_requests(pd.DataFrame({"image": cells}), model, _limits(**serving))
    assert info.value.get_http_status_code() == 413
    assert model.batches == []  # nothing decoded
    assert len(predict_requests(pd.DataFrame({"image": cells[:2]}), model, _limits(max_images=2)))


def test_batch_files_are_not_request_images():
    """The batch command's rows are file loaders: any number, read batch_size at a time."""
    data = pillow_file(np.zeros((30, 30), dtype=np.uint8), "PNG")
    requests = collect_images({f"{i}.png": (lambda: data) for i in range(5)})
    out = predict_requests(requests, FakeServingModel(), _limits(max_images=2))
    assert (out["error"] == "").all()


def test_a_file_over_max_image_bytes_is_a_row_error_before_base64_decoding():
    small = pillow_file(np.zeros((30, 30), dtype=np.uint8), "PNG")
    big = pillow_file(np.random.default_rng(0).integers(0, 255, (60, 60), dtype=np.uint8), "PNG")
    limit = len(big) - 100
    out = predict_requests(
        pd.DataFrame({"image": [_b64(small), _b64(big), big]}),
        FakeServingModel(),
        _limits(max_image_bytes=limit),
    )
    assert out["error"].tolist()[0] == ""
    for error in out["error"].tolist()[1:]:
        assert "file too large" in error and f"max_image_bytes = {limit:,}" in error
        assert error.endswith("Send a smaller file (e.g. a compressed DICOM or a downsampled PNG)")


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
    assert refused["error"] == (
        "cannot decode 'row 0': image too large: 50 × 40 px exceeds inference.max_pixels=1999. "
        "Downsample the image before sending it"
    )
    assert refused["p_malignant"] is None


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_limit_is_read_from_the_header_of_png_and_dicom(tmp_path, bomb_png):
    """A decompression bomb and a DICOM header claiming more pixels than the file holds."""
    assert len(bomb_png) < 500_000  # 0.33 MB for 169 M pixels
    lying_dicom = dicom_header_only(tmp_path, 8_000, 6_000)
    params = base_params("inference")
    assert params["max_pixels"] < 13_000**2
    start = time.perf_counter()
    out = predict_requests(
        pd.DataFrame({"image": [_b64(bomb_png), _b64(lying_dicom)]}), FakeServingModel(), params
    )
    assert time.perf_counter() - start < 2  # refused from the headers: nothing decoded
    limit = params["max_pixels"]
    assert (
        f"image too large: 13000 × 13000 px exceeds inference.max_pixels={limit}"
        in (out.loc[0, "error"])
    )
    assert (
        f"image too large: 6000 × 8000 px exceeds inference.max_pixels={limit}"
        in (out.loc[1, "error"])
    )


class _CountingBudget(DecodeBudget):
    """A budget that records how many decodes hold part of it at the same time."""

    def __init__(self, total: int, parameter: str) -> None:
        super().__init__(total, parameter)
        self.running = self.peak = 0
        self.lock = threading.Lock()

    @contextmanager
    def reserve(self, cost: int, name: str = ""):
        with super().reserve(cost, name):
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            time.sleep(0.05)
            with self.lock:
                self.running -= 1
            yield


def test_decodes_share_one_memory_budget_across_concurrent_requests(monkeypatch):
    from breast_cancer_pipeline.pipelines.inference import model_input

    png = pillow_file(np.zeros((30, 30), dtype=np.uint8), "PNG")
    cost = decode_cost(png).peak_bytes
    megabytes = -(-2 * cost // 2**20)  # room for two decodes, not three
    assert 3 * cost > megabytes * 2**20
    budgets = []

    def shared(total, parameter, small_bytes=0):
        budgets.append(_CountingBudget(total, parameter))
        return budgets[-1] if len(budgets) == 1 else budgets[0]

    monkeypatch.setattr(model_input, "shared_budget", shared)
    params = _limits(decode_memory_mb=megabytes)

    def request(_):
        cells = [_b64(png)] * 3
        return predict_requests(pd.DataFrame({"image": cells}), FakeServingModel(), params)

    with ThreadPoolExecutor(max_workers=6) as pool:
        outs = list(pool.map(request, range(6)))
    assert all((out["error"] == "").all() for out in outs)
    assert budgets[0].total_bytes == megabytes * 2**20
    assert budgets[0].parameter == "inference.serving.decode_memory_mb"
    assert budgets[0].peak == 2  # 18 decodes from 6 requests at once, two at a time


def test_an_image_over_the_memory_limits_is_a_row_error_not_a_wait():
    pixels = np.zeros((40, 50), dtype=np.uint8)
    cost = decode_cost(pillow_file(pixels, "TIFF")).peak_bytes  # what _score sends
    assert _score(pixels, max_decoded_bytes=cost)["error"] == ""
    refused = _score(pixels, max_decoded_bytes=cost - 1)["error"]
    assert refused.startswith(
        "cannot decode 'row 0': decompression bomb (decoding 50 x 40 px L needs "
    )
    assert refused.endswith(
        f"more than max_decoded_bytes allows ({cost - 1:,} bytes)). Downsample the image "
        "before sending it"
    )
    # More than the whole budget: refused at once, naming the budget (no request waits forever).
    refused = _score(
        pixels, max_decoded_bytes=None, serving={"decode_memory_mb": 1, "small_decode_mb": 0}
    )["error"]
    assert "more than inference.serving.decode_memory_mb allows (1,048,576 bytes)" in refused


def test_an_unexpected_decoder_failure_is_a_row_error_without_a_trace(monkeypatch):
    from breast_cancer_pipeline.pipelines.inference import model_input

    def broken(data, name, **kwargs):
        if name == "row 1":
            raise RuntimeError("/srv/secret/path.py line 3")
        return np.zeros((30, 30, 1), dtype=np.uint8)

    monkeypatch.setattr(model_input, "decode_image", broken)
    cell = _b64(pillow_file(np.zeros((30, 30), dtype=np.uint8), "PNG"))
    out = predict_requests(pd.DataFrame({"image": [cell] * 3}), FakeServingModel(), _limits())
    assert out["error"].tolist() == [
        "",
        "cannot decode 'row 1': internal error (logged by the server)",
        "",
    ]


def test_window_percentiles_decide_how_16_bit_images_are_reduced():
    """A 16-bit ramp: windowed on its lower half, the upper half saturates and p rises."""
    ramp = np.tile(np.linspace(1000, 60000, 48).astype(np.uint16), (48, 1))
    full = _score(ramp, window_percentiles=[0.0, 100.0])["p_malignant"]
    lower = _score(ramp, window_percentiles=[0.0, 50.0])["p_malignant"]
    assert full == pytest.approx(0.5, abs=0.03)
    assert lower == pytest.approx(0.75, abs=0.05)


def test_a_decode_past_decode_seconds_is_a_row_error_and_the_others_are_scored(monkeypatch):
    """A slow decode is abandoned for the caller (issue 26, item 2)."""
    import time

    from breast_cancer_pipeline.pipelines.inference import model_input

    real = model_input.decode_image

    def slow_for_row_1(data, name, **kwargs):
        if name == "row 1":
            time.sleep(3.0)
        return real(data, name, **kwargs)

    monkeypatch.setattr(model_input, "decode_image", slow_for_row_1)
    png = _b64(pillow_file(np.full((20, 20), 90, dtype=np.uint8), "PNG"))
    started = time.perf_counter()
    out = predict_requests(
        pd.DataFrame({"image": [png] * 3}), FakeServingModel(), _limits(decode_seconds=0.2)
    )
    seconds = time.perf_counter() - started
    assert out["error"].tolist()[0] == out["error"].tolist()[2] == ""
    assert out["error"][1].startswith(
        "cannot decode 'row 1': decoding took more than inference.serving.decode_seconds = 0.2 s"
    )
    assert out["label"][1] is None and out["label"][0] is not None
    assert seconds < 2.5  # the 3 s decode is not waited for (0.2 s here)


def test_a_model_packaged_before_the_decode_limits_is_served_as_it_was():
    """Its parameters have no decode budget, lane or deadline (nor the old decode count)."""
    params = base_params("inference")
    params = {k: v for k, v in params.items() if k != "max_decoded_bytes"}
    params["serving"] = {
        k: v
        for k, v in params["serving"].items()
        if k not in ("decode_memory_mb", "small_decode_mb", "decode_seconds", "allowed_hosts")
    }
    png = _b64(pillow_file(np.full((20, 20), 90, dtype=np.uint8), "PNG"))
    out = predict_requests(pd.DataFrame({"image": [png] * 2}), FakeServingModel(), params)
    assert out["error"].tolist() == ["", ""] and out["label"].notna().all()


def test_the_batch_command_reads_the_ingestion_path_patterns_from_the_file_names():
    patterns = base_params("ingestion", env="demo")["column_patterns"]
    names = ["P0007_L_CC.png", "P0007_L_MLO.tif", "sub/P0012_R_CC.jpg", "scan.png"]
    requests = collect_images({name: (lambda: b"") for name in names}, patterns)
    table = requests.drop(columns="image").set_index("path")
    assert table.loc["sub/P0012_R_CC.jpg", ["group", "laterality", "view"]].tolist() == [
        "P0012",
        "R",
        "CC",
    ]
    assert table.loc["P0007_L_MLO.tif", "view"] == "MLO"
    assert table.loc["scan.png", ["group", "laterality", "view"]].tolist() == ["", "", ""]
    assert list(collect_images({"a.png": lambda: b""}).columns) == ["path", "image"]


class RecordingServingModel(FakeServingModel):
    """Keeps the pixels it is given; its configuration says how they were made in training."""

    def __init__(self, config):
        super().__init__()
        self.config, self.images = config, []

    def predict_proba(self, images):
        self.images.append(images)
        return super().predict_proba(images)


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "crop_foreground", None])
def test_served_images_get_the_geometry_training_gave_the_model_input(resize):
    """The batch command and the server bring an image to the model as its arrays were made."""
    from breast_cancer_pipeline.geometry import Geometry
    from breast_cancer_pipeline.pipelines.augmentation.nodes import model_image

    pixels = np.full((120, 80), 15, dtype=np.uint8)  # 3:2, the input 2:1
    rows, cols = np.mgrid[:120, :80]
    pixels[(rows - 60) ** 2 + (cols - 80) ** 2 < 30**2] = 180  # a breast on the right edge
    pixels[4:12, 4:16] = 250  # a film label
    png = pillow_file(pixels, "PNG")
    geometry = {"image_size": [32, 16]}
    if resize is not None:  # None: a model packaged before resize modes existed
        geometry |= {"resize": resize, "crop_margin": 0.02}
    model = RecordingServingModel({**CONFIG, **geometry})
    predict_requests(pd.DataFrame({"image": [_b64(png)]}), model, base_params("inference"))
    trained = model_image(lambda: png, "a.png", Geometry.from_config(geometry), "grayscale")
    np.testing.assert_array_equal(model.images[0][0], trained)
    stretched = model_image(lambda: png, "a.png", Geometry(32, 16), "grayscale")
    assert np.array_equal(trained, stretched) == (resize in ("stretch", None))
