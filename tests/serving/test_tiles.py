"""A model trained on tiles, served: a large image cut, scored tile by tile, answered whole.

The tiny tile model (a random small CNN on 32-px RGB tiles, :func:`tiny_tile_model`) is
packaged, logged and registered as a training run does and asked through the server's own
app in-process (once for the module); the batch command, the ONNX Runtime path and the
limits are asked through the scoring node.
"""

import base64
import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breast_cancer_pipeline.imaging import encode_png
from tests.params import base_params
from tests.serving._served import (
    CONFIG,
    TILE_CONFIG,
    TILES,
    asgi_request,
    log_and_register,
    tiny_tile_model,
)

HEADERS = {"host": "127.0.0.1:5001", "content-type": "application/json"}
GRADCAM = base_params("reporting")["gradcam"]
#: The answer of a whole-image model, in order; a tile model's adds the tile columns.
WHOLE_IMAGE_COLUMNS = [
    "id",
    "label",
    *(f"p_{c}" for c in CONFIG["class_names"]),
    "threshold",
    "thresholded_label",
    "ood_score",
    "in_distribution",
    "prediction_set",
]


def rgb_image(height: int, width: int) -> np.ndarray:
    """Colour ramps crossed with diagonal bands and a bright square: every tile differs."""
    y, x = np.ogrid[0:height, 0:width]
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[..., 0] = x * 255 // width
    image[..., 1] = y * 255 // height
    image[..., 2] = (x + 3 * y) % 256
    image[height // 2 : height // 2 + 40, width // 3 : width // 3 + 40] = 255
    return image


def b64(image: np.ndarray) -> str:
    return base64.b64encode(encode_png(image, compress_level=1)).decode()


@pytest.fixture(scope="module")
def tile_model():
    return tiny_tile_model()


@pytest.fixture(scope="module")
def tile_app(tmp_path_factory, _mlflow_template):
    """``(app, served model)``: the tile model registered and served by the server's code."""
    from breast_cancer_pipeline.serving.server import create_app, load_served_model, served_part

    root = tmp_path_factory.mktemp("tiles")
    shutil.copyfile(_mlflow_template, root / "mlflow.db")  # its tables made: no migrations
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
            patch.delenv(key)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        # One view per tile and 512 tiles per forward pass: the 3,072 tiles of a 2048 x 1536
        # image in 6 passes.
        one_view = {"tta": {"mode": "off", "passes": 1, "shift": 0.05}}
        log_and_register(root, model=tiny_tile_model(), probabilities=one_view, batch_size=512)
        model, info = load_served_model("models:/breast-cancer-classifier/1")
        yield create_app(model, info), served_part(model, "serving_model")
        # MLflow's scoring app marks the process as a server: not for the next tests.
        patch.delenv("MLFLOW_IS_IN_SERVING_ENVIRONMENT", raising=False)


def _ask(app, rows: list[list], columns=("image", "id", "explain")) -> list[dict]:
    body = {"dataframe_split": {"columns": list(columns), "data": rows}}
    status, raw = asgi_request(app, json.dumps(body).encode(), headers=HEADERS)
    assert status == 200, raw[:500]
    return json.loads(raw)["predictions"]


@pytest.mark.slow
def test_a_2048_x_1536_request_gets_one_answer_with_its_top_tiles(tile_app):
    from breast_cancer_pipeline.imaging import resize_image
    from breast_cancer_pipeline.tiles import aggregate_tiles, tile_image

    app, served = tile_app
    image = rgb_image(1536, 2048)
    (row,) = _ask(app, [[b64(image), "slide", True]])

    assert row["error"] == ""
    assert list(row) == [
        *WHOLE_IMAGE_COLUMNS,
        "top_tiles",
        "image_height",
        "image_width",
        "error",
        "gradcam_png",
    ]
    assert (row["image_height"], row["image_width"]) == (1536, 2048)
    # The answer is the image's: its tiles, cut as training cuts them, combined and recalibrated.
    spec = served.tiles
    tiles = tile_image(image, spec)
    assert len(tiles) == 48 * 64
    tile_proba = served.averaged_proba(tiles.pixels)
    whole = served.calibrate(aggregate_tiles(tile_proba, np.zeros(len(tiles), int), 1, spec, 1))
    for j, name in enumerate(CONFIG["class_names"]):
        assert row[f"p_{name}"] == pytest.approx(whole[0, j], abs=1e-5), name
    features = served.forward(tiles.pixels)[0]
    assert row["ood_score"] == pytest.approx(served.ood.score(features).mean(), rel=1e-4)
    # The top tiles: the 3 highest p(malignant), each box in the image's pixels scoring as said.
    top = row["top_tiles"]
    assert [set(t) for t in top] == [{"top", "left", "height", "width", "score"}] * 3
    best = np.sort(tile_proba[:, 1])[::-1][:3]
    np.testing.assert_allclose([t["score"] for t in top], best, atol=1e-5)
    for t in top:
        assert t["top"] >= 0 and t["top"] + t["height"] <= 1536
        assert t["left"] >= 0 and t["left"] + t["width"] <= 2048
        crop = image[t["top"] : t["top"] + t["height"], t["left"] : t["left"] + t["width"]]
        assert served.averaged_proba(crop[None])[0, 1] == pytest.approx(t["score"], abs=1e-5)
    # Explained: the thumbnail (long side inference.serving.thumbnail_side), Grad-CAM on the
    # top tile's box (32 px in the image, 8 px in the thumbnail) and nowhere else.
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(row["gradcam_png"]))))
    side = base_params("inference")["serving"]["thumbnail_side"]
    assert shown.shape == (side * 3 // 4, side, 3)
    thumbnail = resize_image(image, shown.shape[:2])
    inside = np.zeros(shown.shape[:2], dtype=bool)
    y, x = top[0]["top"] * side // 2048, top[0]["left"] * side // 2048
    inside[y : y + 8, x : x + 8] = True
    np.testing.assert_array_equal(shown[~inside], thumbnail[~inside])
    assert (shown[inside] != thumbnail[inside]).any()


def test_an_image_too_large_to_tile_is_a_row_error_naming_the_budget(tile_model):
    from breast_cancer_pipeline.pipelines.inference.nodes import predict_requests

    # Tiles every 2 px: a 1024-px square gives 247,009 tiles (759 MB), a small image 153.
    overlapping = tile_model.with_config(tiles={**TILES, "stride": 2})
    requests = pd.DataFrame(
        {"image": [b64(rgb_image(1024, 1024)), b64(rgb_image(48, 64))], "id": ["big", "small"]}
    )
    answer = predict_requests(requests, overlapping, base_params("inference"))
    big, small = answer.to_dict("records")
    budget = base_params("inference")["serving"]["decode_memory_mb"] * 2**20
    assert big["error"].startswith(
        "cannot tile 'big': image too large to tile (1024 × 1024 px gives 247,009 tiles: "
        "tiling needs "
    )
    assert big["error"].endswith(
        f"more than inference.serving.decode_memory_mb allows ({budget:,} bytes)). Downsample "
        "the image before sending it, or raise inference.serving.decode_memory_mb"
    )
    assert big["p_malignant"] is None and big["top_tiles"] is None
    assert small["error"] == "" and len(small["top_tiles"]) == 3
    assert (small["image_height"], small["image_width"]) == (48, 64)


def test_the_batch_command_answers_per_image_with_top_tiles_as_json(tile_model, tmp_path):
    from breast_cancer_pipeline.pipelines.inference.nodes import collect_images, predict_files

    files = {"a.png": encode_png(rgb_image(64, 96)), "notes.png": b"not an image"}
    frame = collect_images({name: (lambda data=data: data) for name, data in files.items()})
    predictions, _ = predict_files(frame, tile_model, base_params("inference"))

    assert predictions["path"].tolist() == ["a.png", "notes.png"]
    top = json.loads(predictions.loc[0, "top_tiles"])  # JSON text: a CSV cell of its own
    assert len(top) == 3 and all(t["height"] == t["width"] == 32 for t in top)
    assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
    assert predictions.loc[1, "top_tiles"] is None and predictions.loc[1, "error"]
    written = tmp_path / "predictions.csv"
    predictions.to_csv(written, index=False)
    assert json.loads(pd.read_csv(written).loc[0, "top_tiles"]) == top


def test_onnxruntime_answers_a_tiled_image_as_tensorflow(tile_model):
    from breast_cancer_pipeline.pipelines.inference.nodes import predict_requests
    from breast_cancer_pipeline.serving.export import saved_model, served_network, to_onnx

    with saved_model(served_network(tile_model)) as saved:
        graph = to_onnx(saved, base_params("inference")["export"]["opset"])
    model = tile_model.with_exports({"onnx": graph})
    requests = pd.DataFrame({"image": [b64(rgb_image(96, 160))], "id": ["a"]})
    answers = {
        runtime: predict_requests(
            requests, model, base_params("inference", serving={"runtime": runtime})
        ).to_dict("records")[0]
        for runtime in ("tensorflow", "onnxruntime")
    }
    onnx, tensorflow = answers["onnxruntime"], answers["tensorflow"]
    assert onnx.keys() == tensorflow.keys() and onnx["error"] == ""
    for key in ("p_benign", "p_malignant", "p_normal", "ood_score"):
        assert onnx[key] == pytest.approx(tensorflow[key], abs=1e-4, rel=1e-4), key
    boxes = [[t[k] for k in ("top", "left", "height", "width")] for t in tensorflow["top_tiles"]]
    assert [[t[k] for k in ("top", "left", "height", "width")] for t in onnx["top_tiles"]] == boxes
    np.testing.assert_allclose(
        [t["score"] for t in onnx["top_tiles"]],
        [t["score"] for t in tensorflow["top_tiles"]],
        atol=1e-4,
    )


def test_a_network_with_the_internal_background_class_answers_the_image_classes():
    """Mask-labelled tiles with ``background_label: null``: the network has one more output."""
    from breast_cancer_pipeline.modeling import build_classifier
    from breast_cancer_pipeline.pipelines.inference.nodes import predict_requests
    from breast_cancer_pipeline.serving import ServingModel
    from breast_cancer_pipeline.tiles import TileSpec, image_probabilities, tile_image

    network = build_classifier("small_cnn", 4, 32, 3, None, {"dropout": 0.0})
    spec = TileSpec(32, 32, aggregation="max", labels="mask")
    served = ServingModel(network, {**TILE_CONFIG, "tiles": spec.config()})
    image = rgb_image(64, 96)
    requests = pd.DataFrame({"image": [b64(image)]})
    (answer,) = predict_requests(requests, served, base_params("inference")).to_dict("records")

    tiles = tile_image(image, spec)
    tile_names = [*CONFIG["class_names"], "background"]
    expected = image_probabilities(
        served.averaged_proba(tiles.pixels), np.zeros(len(tiles), int), 1, spec, tile_names,
        "malignant",
    )  # fmt: skip
    shown = [answer[f"p_{name}"] for name in CONFIG["class_names"]]
    assert answer["error"] == "" and "p_background" not in answer
    np.testing.assert_allclose(shown, expected[0], atol=1e-6)
    assert sum(shown) == pytest.approx(1.0)


def test_a_tile_models_configuration_is_checked(tile_model):
    from breast_cancer_pipeline.serving import ServingModel, check_config
    from breast_cancer_pipeline.tiles import TileSpec

    with pytest.raises(ValueError, match="augmentation.tiles.stride must be a positive int"):
        check_config({**TILE_CONFIG, "tiles": {**TILES, "stride": 0}})
    with pytest.raises(ValueError, match=r"\(32, 32, 3\) but the serving configuration says"):
        ServingModel(tile_model.model, {**tile_model.config, "tiles": {**TILES, "size": 64}})
    # Completed with the defaults; another helper's keys (the attention head's file) kept.
    checked = check_config({**TILE_CONFIG, "tiles": {**TILES, "attention_head": "head.keras"}})
    assert checked["tiles"] == {**TileSpec(**TILES).config(), "attention_head": "head.keras"}
    assert "tiles" not in check_config(CONFIG)  # a whole-image model's configuration as before


def test_tiling_cost_holds_what_tiling_holds_and_little_more():
    from breast_cancer_pipeline.serving.tiling import thumbnail_box, tiling_cost, top_tiles
    from breast_cancer_pipeline.tiles import TileSpec, tile_image

    image = rgb_image(150, 200)
    for spec in (TileSpec(32, 16), TileSpec(32, 32, scale=2.0), TileSpec(256, 256)):
        tiles = tile_image(image, spec)
        held = image.nbytes + tiles.pixels.nbytes
        assert held <= tiling_cost(image.shape, spec) <= 2 * held, spec
    boxes = np.array([[0, 0, 32, 32], [0, 32, 32, 32], [32, 0, 32, 32]])
    assert top_tiles(boxes, np.array([0.2, 0.9, 0.2]), 2) == [
        {"top": 0, "left": 32, "height": 32, "width": 32, "score": 0.9},
        {"top": 0, "left": 0, "height": 32, "width": 32, "score": 0.2},
    ]
    # A 32-px box of a 2048 x 1536 image on its 512 x 384 thumbnail: 8 px.
    assert thumbnail_box((1504, 2016, 32, 32), (1536, 2048), (384, 512, 3)) == (376, 384, 504, 512)
