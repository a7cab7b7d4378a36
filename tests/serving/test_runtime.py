"""``inference.serving.runtime``: the server on ONNX Runtime answers as on TensorFlow.

The tiny model is packaged with its ``model.onnx``, logged and registered as a training run
does, loaded twice by the server's own code (``load_served_model``, ``use_runtime``,
``create_app``) and asked the same requests in-process: every request format, Grad-CAM and
the hostile requests. The answers must be equal but for the last digits of the probabilities
and the out-of-distribution score.
"""

import base64
import json
import os

import pytest

from tests.params import base_params
from tests.payloads import zeros_png
from tests.pipelines.inference._files import dicom_header_only, every_format
from tests.serving._served import asgi_request, log_and_register, tiny_serving_model

HEADERS = {"host": "127.0.0.1:5001", "content-type": "application/json"}


def tiny_onnx() -> bytes:
    """``model.onnx`` of the tiny served model (its weights are seeded: the same model)."""
    from breast_cancer_pipeline.serving.export import saved_model, served_network, to_onnx

    opset = base_params("inference")["export"]["opset"]
    with saved_model(served_network(tiny_serving_model())) as saved:
        return to_onnx(saved, opset)


@pytest.fixture(scope="module")
def onnx_graph() -> bytes:
    return tiny_onnx()


def _count_onnx_batches(patch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the batches ONNX Runtime runs from now on."""
    from breast_cancer_pipeline.serving import runtime

    batches: list[int] = []
    real = runtime.onnx_forward

    def counted(graph: bytes):
        forward = real(graph)
        return lambda images: batches.append(len(images)) or forward(images)

    patch.setattr(runtime, "onnx_forward", counted)
    return batches


@pytest.fixture(scope="module")
def apps(tmp_path_factory, onnx_graph):
    """``({runtime: app}, sizes of the batches ONNX Runtime ran)``."""
    from breast_cancer_pipeline.serving import runtime
    from breast_cancer_pipeline.serving.server import create_app, load_served_model

    root = tmp_path_factory.mktemp("runtime")
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
            patch.delenv(key)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        log_and_register(root, exports={"onnx": onnx_graph})
        onnx_batches = _count_onnx_batches(patch)
        found = {}
        for name in runtime.RUNTIMES:
            model, info = load_served_model("models:/breast-cancer-classifier/1")
            assert runtime.use_runtime(model, name) == name
            found[name] = create_app(model, info)
        yield found, onnx_batches
        # MLflow's scoring app marks the process as a server: not for the next tests.
        patch.delenv("MLFLOW_IS_IN_SERVING_ENVIRONMENT", raising=False)


def _split(rows: list[list], columns=("image", "id")) -> bytes:
    return json.dumps({"dataframe_split": {"columns": list(columns), "data": rows}}).encode()


def _requests(tmp_path) -> dict[str, tuple[bytes, dict]]:
    """Every request format and the hostile requests: ``{name: (body, headers)}``."""
    cells = [base64.b64encode(data).decode() for data in every_format(tmp_path).values()]
    huge = base64.b64encode(dicom_header_only(tmp_path, 13_000, 13_000)).decode()
    garbage = [base64.b64encode(b"<html>not found</html>").decode(), "%%% not base64", huge]
    records = [{"image": c, "id": f"r{i}"} for i, c in enumerate(cells)]
    csv = "image,id\n" + "".join(f"{c},c{i}\n" for i, c in enumerate(cells))
    limits = base_params("inference")["serving"]
    return {
        "split, every format and bad rows": (
            _split([[c, f"s{i}"] for i, c in enumerate(cells + garbage)]),
            HEADERS,
        ),
        "records": (json.dumps({"dataframe_records": records}).encode(), HEADERS),
        "csv": (csv.encode(), {**HEADERS, "content-type": "text/csv"}),
        "explain": (
            _split([[cells[0], "e0", True], [cells[1], "e1", False]], ("image", "id", "explain")),
            HEADERS,
        ),
        "explain yes": (_split([[cells[0], "yes"]], ("image", "explain")), HEADERS),
        "no image column": (_split([["x", "y"]], ("picture", "id")), HEADERS),
        "too many images": (
            _split([[cells[0], i] for i in range(limits["max_images"] + 1)]),
            HEADERS,
        ),
        "no content type": (b"{}", {"host": HEADERS["host"]}),
        "another host": (b"{}", {**HEADERS, "host": "rebound.example"}),
        "nested deep": (b"[" * 100_000 + b"]" * 100_000, HEADERS),
        "random bytes": (os.urandom(1 << 16), HEADERS),
        "a PNG over max_pixels": (
            _split([[base64.b64encode(zeros_png(7_000, 7_000, 0)).decode(), "big"]]),
            HEADERS,
        ),
    }


def _same_answer(onnx: dict, tensorflow: dict, request: str) -> None:
    """Equal in every field but the probabilities and the score, which are within 1e-4."""
    assert onnx.keys() == tensorflow.keys(), request
    if "predictions" not in tensorflow:
        assert onnx == tensorflow, request
        return
    for ours, theirs in zip(onnx["predictions"], tensorflow["predictions"], strict=True):
        assert ours.keys() == theirs.keys(), request
        for key, value in theirs.items():
            if value is not None and (key.startswith("p_") or key == "ood_score"):
                assert ours[key] == pytest.approx(value, abs=1e-4, rel=1e-4), (request, key)
            else:
                assert ours[key] == value, (request, key)


def test_onnxruntime_answers_every_request_as_tensorflow_does(apps, tmp_path):
    found, onnx_batches = apps
    answers = {}
    for name, (body, headers) in _requests(tmp_path).items():
        got = {}
        for runtime, app in found.items():
            status, raw = asgi_request(app, body, headers=headers)
            got[runtime] = (status, json.loads(raw))
        assert got["onnxruntime"][0] == got["tensorflow"][0], (name, got)
        _same_answer(got["onnxruntime"][1], got["tensorflow"][1], name)
        answers[name] = got["tensorflow"]
    assert onnx_batches, "ONNX Runtime ran no batch"
    # The answers are the server's real ones: scored rows, row errors and refusals.
    status, body = answers["split, every format and bad rows"]
    rows = body["predictions"]
    assert status == 200 and [r["error"] == "" for r in rows] == [True] * 4 + [False] * 3
    assert "image too large: 13000 × 13000 px" in rows[-1]["error"]
    assert rows[0]["prediction_set"] is not None and rows[0]["ood_score"] is not None
    explained, plain = answers["explain"][1]["predictions"]
    assert base64.b64decode(explained["gradcam_png"]).startswith(b"\x89PNG")  # Keras's Grad-CAM
    assert plain["gradcam_png"] is None
    assert [answers[k][0] for k in ("no image column", "explain yes", "nested deep")] == [400] * 3
    assert answers["too many images"][0] == 413 and answers["no content type"][0] == 415
    assert answers["another host"][0] == 400 and answers["random bytes"][0] == 400
    assert "inference.max_pixels" in answers["a PNG over max_pixels"][1]["predictions"][0]["error"]
    assert answers["records"][1]["predictions"][0]["id"] == "r0"
    assert answers["csv"][1]["predictions"][3]["id"] == "c3"


def test_an_unknown_runtime_or_a_model_without_onnx_is_refused_by_name():
    from breast_cancer_pipeline.serving.runtime import served_by

    model = tiny_serving_model()
    assert served_by(model, "tensorflow") is model
    with pytest.raises(ValueError, match=r"inference.serving.runtime must be one of"):
        served_by(model, "tensorrt")
    with pytest.raises(ValueError, match=r"has no model.onnx.*inference.export.onnx: true"):
        served_by(model, "onnxruntime")


def test_the_batch_command_scores_on_onnxruntime_as_on_tensorflow(
    onnx_graph, tmp_path, monkeypatch
):
    from breast_cancer_pipeline.pipelines.inference.nodes import collect_images, predict_requests

    model = tiny_serving_model().with_exports({"onnx": onnx_graph})
    files = every_format(tmp_path)
    frame = collect_images({name: (lambda data=data: data) for name, data in files.items()})
    onnx_batches = _count_onnx_batches(monkeypatch)
    scored = {}
    for runtime in ("tensorflow", "onnxruntime"):
        params = base_params("inference", batch_size=3, serving={"runtime": runtime})
        scored[runtime] = {"predictions": predict_requests(frame, model, params).to_dict("records")}
    _same_answer(scored["onnxruntime"], scored["tensorflow"], "batch")
    assert onnx_batches == [3, 1]  # batch_size at a time
    assert [row["path"] for row in scored["onnxruntime"]["predictions"]] == sorted(files)
