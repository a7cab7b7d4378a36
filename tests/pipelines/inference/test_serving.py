"""The packaged model: saved, logged and registered like a training run does, then served for
real by `mlflow models serve` on 127.0.0.1 (slow: about a minute)."""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.params import base_params

from ._files import every_format

PROJECT = Path(__file__).resolve().parents[3]
CONFIG = {
    "class_names": ["benign", "malignant", "normal"],
    "image_size": 32,
    "channels": 1,
    "color_mode": "grayscale",
    "positive_class": "malignant",
    "threshold": 0.2,
}


def _tiny_serving_model():
    from breast_cancer_pipeline.modeling import build_classifier, set_seed
    from breast_cancer_pipeline.serving import ServingModel

    set_seed(0)
    model = build_classifier("small_cnn", 3, 32, 1, None, {"dropout": 0.0})
    return ServingModel(model, CONFIG)


def test_dataset_round_trip_and_compiled_forward(tmp_path):
    from breast_cancer_pipeline.datasets.serving_model import (
        ServingModelDataset,
        TFServingExportDataset,
    )

    serving = _tiny_serving_model()
    dataset = ServingModelDataset(str(tmp_path / "serving_model"))
    dataset.save(serving)
    loaded = dataset.load()
    x = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 1)).astype(np.uint8)
    expected = serving.model.predict(x, verbose=0)
    np.testing.assert_allclose(loaded.predict_proba(x), expected, atol=1e-5)
    np.testing.assert_allclose(loaded.predict_proba(x[:1]), expected[:1], atol=1e-5)
    assert loaded.config["threshold"] == 0.2
    import copy

    assert copy.deepcopy(loaded) is loaded  # kedro-mlflow deep-copies its catalog per request

    export = TFServingExportDataset(str(tmp_path / "serving"))
    export.save(serving.model)
    export.save(serving.model)
    assert [Path(p).name for p in export.load()] == ["1", "2"]
    import tensorflow as tf

    served = tf.saved_model.load(str(tmp_path / "serving" / "2"))
    np.testing.assert_allclose(served.serve(tf.constant(x)).numpy(), expected, atol=1e-5)


def test_config_errors_name_the_problem():
    from breast_cancer_pipeline.serving import ServingModel, check_config

    with pytest.raises(ValueError, match="lacks \\['threshold'\\]"):
        check_config({k: v for k, v in CONFIG.items() if k != "threshold"})
    with pytest.raises(ValueError, match="reporting.positive_class"):
        check_config({**CONFIG, "positive_class": "cancer"})
    with pytest.raises(ValueError, match="the serving configuration says"):
        ServingModel(_tiny_serving_model().model, {**CONFIG, "image_size": 64})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=payload, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _log_and_register(tmp_path: Path) -> None:
    """What kedro-mlflow's hook does at the end of a training run, on a tiny model."""
    import mlflow
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.pipeline import Node, Pipeline
    from kedro_mlflow.mlflow import KedroPipelineModel

    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset
    from breast_cancer_pipeline.pipelines.inference.pipeline import with_served_model

    ServingModelDataset(str(tmp_path / "serving_model")).save(_tiny_serving_model())
    training = Pipeline([Node(lambda: None, None, "serving_model", name="train")])
    pipeline_ml = with_served_model(training)
    catalog = DataCatalog(
        {
            "serving_model": ServingModelDataset(str(tmp_path / "serving_model")),
            "params:inference": MemoryDataset(base_params("inference", batch_size=8)),
        }
    )
    model = KedroPipelineModel(pipeline_ml.inference, catalog, pipeline_ml.input_name)
    kwargs = dict(pipeline_ml.log_model_kwargs)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            python_model=model,
            artifacts=model.extract_pipeline_artifacts(tmp_path),
            **kwargs,
        )


def _local_proba(tmp_path: Path, files: dict[str, bytes]) -> np.ndarray:
    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset
    from breast_cancer_pipeline.imaging import decode_image, resize_image

    serving = ServingModelDataset(str(tmp_path / "serving_model")).load()
    params = base_params("inference")
    pixels = [
        resize_image(
            decode_image(
                data,
                name,
                max_pixels=params["max_pixels"],
                window_percentiles=tuple(params["window_percentiles"]),
            ),
            CONFIG["image_size"],
        )
        for name, data in files.items()
    ]
    return serving.predict_proba(np.stack(pixels))


@pytest.mark.slow
def test_mlflow_models_serve_answers_images_rejects_garbage_and_stays_up(tmp_path):
    _log_and_register(tmp_path)
    port = _free_port()
    # `mlflow models serve` starts its web server by name: the venv's bin must be on PATH.
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "KEDRO_LOGGING_CONFIG": str(PROJECT / "conf" / "logging_serving.yml"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    mlflow_cli = str(Path(sys.executable).with_name("mlflow"))
    server = subprocess.Popen(
        [mlflow_cli, "models", "serve", "-m", "models:/breast-cancer-classifier/latest"]
        + ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start:\n{server.stdout.read().decode()[-3000:]}")
            time.sleep(1)

        files = every_format(tmp_path)
        cells = [base64.b64encode(v).decode() for v in files.values()]
        cells += [base64.b64encode(b"<html>not found</html>").decode(), "%%% not base64"]
        payload = {"dataframe_split": {"columns": ["image"], "data": [[c] for c in cells]}}
        status, body = _post(f"{base}/invocations", json.dumps(payload).encode())
        assert status == 200, body
        rows = pd.DataFrame(body["predictions"])
        assert len(rows) == 6
        good, bad = rows.iloc[:4], rows.iloc[4:]
        assert (good["error"] == "").all()
        p = good[["p_benign", "p_malignant", "p_normal"]].astype(float).to_numpy()
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-4)
        # Same gradient in four formats: the same decoded pixels, the same probabilities.
        np.testing.assert_allclose(p, np.repeat(p[:1], 4, axis=0), atol=0.02)
        # And what the saved model gives in this process for the same decoded images.
        np.testing.assert_allclose(p, _local_proba(tmp_path, files), atol=1e-4)
        names = np.array(CONFIG["class_names"])
        assert good["label"].tolist() == names[p.argmax(axis=1)].tolist()
        assert (rows["threshold"] == 0.2).all()
        assert "not an image" in bad.iloc[0]["error"]
        assert "not valid base64" in bad.iloc[1]["error"]
        assert all(
            body["predictions"][i][key] is None for i in (4, 5) for key in ("label", "p_malignant")
        )

        status, body = _post(f"{base}/invocations", b"{not json")
        assert 400 <= status < 500, body
        no_image = {"dataframe_split": {"columns": ["picture"], "data": [["x"]]}}
        status, body = _post(f"{base}/invocations", json.dumps(no_image).encode())
        assert 400 <= status < 500 and "image" in json.dumps(body), body

        one = {"dataframe_split": {"columns": ["image", "id"], "data": [[cells[0], "case-7"]]}}
        for _ in range(10):  # bounded: the server keeps answering after the bad requests
            status, body = _post(f"{base}/invocations", json.dumps(one).encode())
            assert status == 200, body
        assert body["predictions"][0]["id"] == "case-7"
        assert server.poll() is None
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
