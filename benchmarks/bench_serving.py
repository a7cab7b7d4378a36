"""Serving and batch-prediction overheads against the bare model, side by side.

The model is the project's classifier with an EfficientNetB0 backbone (a default candidate) at
224 px, grayscale, random weights: speed does not depend on the weights.

* ``serving.latency_ratio``: p50 latency of one 224-px PNG sent to ``mlflow models serve``
  (the registered pyfunc: HTTP + JSON + base64 + decode + Kedro pipeline + model) over the p50
  of the bare compiled forward pass of the same model on one pre-decoded image, in six
  interleaved blocks (served, bare, in-process pyfunc) of 20 requests each; the ratio is each
  block's, the figure their median. Goal <= 1.3.
* ``predict.batch_efficiency``: images/s of the batch command (the ``inference`` pipeline run
  by a Kedro session in a warm interpreter: list files, read, decode, resize, predict, write
  the CSV, including loading the model and tracing its forward pass, about 2.7 s here) over
  500 PNG files, against images/s of a warmed bare ``model.predict`` on the same images
  pre-decoded, in three interleaved rounds; the ratio is each round's, the figure their
  median. Goal >= 0.8.

The client holds a kept-alive connection, as a real one does, but the server closes it after
5 s idle: the client reopens it when the server has closed it (:class:`_Client`), and the
warm-up, whose first calls take longer than that, opens a new connection per request.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks._project import copy_project
from tests.params import base_params

PROJECT = Path(__file__).resolve().parents[1]
LOGGING_CONFIG = PROJECT / "conf" / "logging_serving.yml"
BACKBONE, SIZE = "efficientnet_b0", 224
#: Files of the batch command; blocks of served requests, requests per block, warm-up calls.
N_FILES, BLOCKS, PER_BLOCK, WARM_UP = (16, 3, 5, 3) if harness.quick() else (500, 6, 20, 10)
GOALS: dict[str, harness.Goal] = {
    "serving.latency_ratio": ("<=", 1.3),
    "predict.batch_efficiency": (">=", 0.8),
}
#: What a POST on a connection the server has closed raises (``RemoteDisconnected`` is a
#: ``ConnectionResetError``; ``ImproperConnectionState`` follows a request cut short).
CLOSED = (ConnectionError, http.client.ImproperConnectionState)
#: The served and batch command's parameters (conf/base): its batch size is the bare model's too.
INFERENCE = base_params("inference")
BATCH = INFERENCE["batch_size"]
CONFIG = {
    "class_names": ["benign", "malignant", "normal"],
    "image_size": SIZE,
    "channels": 1,
    "color_mode": "grayscale",
    "positive_class": "malignant",
    "threshold": 0.5,
}


def _images(n: int, seed: int = 0) -> np.ndarray:
    """Speckled ultrasound-like 224-px images (PNG sizes like real ones, unlike flat noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    out = np.empty((n, SIZE, SIZE, 1), dtype=np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(60, 164), rng.uniform(60, 164), rng.uniform(15, 40)
        base = 90 + 40 * np.sin(yy / rng.uniform(8, 20)) - 60 * (np.hypot(yy - cy, xx - cx) < r)
        out[i, ..., 0] = np.clip(base + rng.normal(0, 25, (SIZE, SIZE)), 0, 255)
    return out


def _p50_ms(fn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


class _Client:
    """POSTs to the server over one kept-alive connection, reopened if the server closed it."""

    def __init__(self, port: int, timeout: float = 120) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def post(self, path: str, body: bytes) -> bytes:
        """The response body of one POST; a connection the server closed is reopened once."""
        try:
            status, payload = self._send(path, body)
        except CLOSED:
            self._connection.close()  # the next request opens a new connection
            status, payload = self._send(path, body)
        if status != 200:
            raise RuntimeError(f"POST {path}: HTTP {status}: {payload[:300]!r}")
        return payload

    def _send(self, path: str, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        self._connection.request("POST", path, body=body, headers=headers)
        response = self._connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        self._connection.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _register(workdir: Path) -> None:
    """Log and register the served model the way kedro-mlflow's hook does after training."""
    import mlflow
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.pipeline import Node, Pipeline
    from kedro_mlflow.mlflow import KedroPipelineModel

    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset
    from breast_cancer_pipeline.pipelines.inference.pipeline import (
        SERVING_INPUT,
        create_serving_pipeline,
    )
    from breast_cancer_pipeline.serving import with_served_model

    training = Pipeline([Node(lambda: None, None, "serving_model")])
    pipeline_ml = with_served_model(training, create_serving_pipeline(), SERVING_INPUT)
    catalog = DataCatalog(
        {
            "serving_model": ServingModelDataset(str(workdir / "serving_model")),
            "params:inference": MemoryDataset(INFERENCE),
            "params:reporting.gradcam": MemoryDataset(base_params("reporting")["gradcam"]),
        }
    )
    model = KedroPipelineModel(pipeline_ml.inference, catalog, pipeline_ml.input_name)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            python_model=model,
            artifacts=model.extract_pipeline_artifacts(workdir),
            **pipeline_ml.log_model_kwargs,
        )


def _start_server(workdir: Path) -> tuple[subprocess.Popen, int]:
    """``mlflow models serve`` of the registered model, once it answers ``/ping``."""
    port = _free_port()
    # `mlflow models serve` starts its web server by name: the venv's bin must be on PATH.
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "KEDRO_LOGGING_CONFIG": str(LOGGING_CONFIG),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "models", "serve"]
        + ["-m", "models:/breast-cancer-classifier/latest", "--env-manager", "local"]
        + ["-h", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return server, port
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                os.killpg(server.pid, signal.SIGTERM)
                raise RuntimeError("mlflow models serve did not start") from None
            time.sleep(1)


def _serving(workdir: Path, serving_model: Any, image_png: bytes) -> dict[str, Any]:
    _register(workdir)
    server, port = _start_server(workdir)
    try:
        ms = _latencies(port, serving_model, image_png)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return {
        "serving.latency_ratio": harness.summary(harness.ratios(ms["served"], ms["bare"])),
        "serving.p50_ms": harness.summary(ms["served"], 2),
        "serving.bare_forward_p50_ms": harness.summary(ms["bare"], 2),
        "serving.pyfunc_in_process_p50_ms": harness.summary(ms["pyfunc"], 2),
        "serving.image_size": SIZE,
        "serving.blocks": f"{BLOCKS} x {PER_BLOCK} requests",
    }


def _latencies(port: int, serving_model: Any, image_png: bytes) -> dict[str, list[float]]:
    """p50 milliseconds of each block: served, bare forward pass, pyfunc in this process."""
    image = base64.b64encode(image_png).decode()
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[image]]}}).encode()
    client = _Client(port)

    def served() -> None:
        prediction = json.loads(client.post("/invocations", body))["predictions"][0]
        assert prediction["error"] == "", prediction

    # The same request through the pyfunc in this process: the split between the HTTP
    # server and the model's own pipeline (decode, Kedro run, frame).
    import mlflow
    import pandas as pd

    pyfunc = mlflow.pyfunc.load_model("models:/breast-cancer-classifier/latest")
    frame = pd.DataFrame({"image": [image]})
    in_process = lambda: pyfunc.predict(frame)  # noqa: E731

    from breast_cancer_pipeline.imaging import decode_image

    one = decode_image(image_png, color_mode="grayscale")[None]
    bare = lambda: serving_model.predict_proba(one)  # noqa: E731
    for _ in range(WARM_UP):  # the first calls trace for seconds: a new connection each
        client.close()
        served()
        bare()
        in_process()

    def block(fn: Any, reopen: bool = False) -> Any:
        def measure() -> float:
            if reopen:  # untimed: the connection idled through the other blocks
                client.close()
                served()
            return _p50_ms(fn, PER_BLOCK)

        return measure

    try:
        return harness.interleave(
            {
                "served": block(served, reopen=True),
                "bare": block(bare),
                "pyfunc": block(in_process),
            },
            repeats=BLOCKS,
        )
    finally:
        client.close()


def _batch(workdir: Path, serving_model: Any, images: np.ndarray) -> dict[str, Any]:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from breast_cancer_pipeline.imaging import encode_png

    folder = workdir / "to_score"
    folder.mkdir()
    for i, image in enumerate(images):
        (folder / f"{i:04d}.png").write_bytes(encode_png(image))
    # A throw-away copy of the project whose catalog points at the benchmark's model and output.
    project = copy_project(workdir / "project")
    (project / "conf" / "local" / "catalog.yml").write_text(
        f"serving_model:\n"
        f"  type: breast_cancer_pipeline.datasets.serving_model.ServingModelDataset\n"
        f"  filepath: {workdir / 'serving_model'}\n"
        f"predictions:\n  type: pandas.CSVDataset\n  filepath: {workdir / 'predictions.csv'}\n"
    )
    bootstrap_project(project)

    def batch_command() -> float:
        started = time.perf_counter()
        with KedroSession.create(
            project_path=project, runtime_params={"inference": {"source_dir": str(folder)}}
        ) as session:
            session.run(pipeline_names=["inference"])
        return time.perf_counter() - started

    model = serving_model.model

    def bare_predict() -> float:
        started = time.perf_counter()
        model.predict(images, batch_size=BATCH, verbose=0)
        return time.perf_counter() - started

    bare_predict()  # warm: traces the full and last batch
    batch_command()  # warm: imports
    seconds = harness.interleave({"batch": batch_command, "bare": bare_predict})
    import pandas as pd

    scored = pd.read_csv(workdir / "predictions.csv")
    assert len(scored) == N_FILES and scored["error"].isna().all(), scored.head()
    batch_rate = [N_FILES / s for s in seconds["batch"]]
    bare_rate = [N_FILES / s for s in seconds["bare"]]
    return {
        "predict.batch_efficiency": harness.summary(harness.ratios(batch_rate, bare_rate)),
        "predict.batch_images_per_s": harness.summary(batch_rate, 1),
        "predict.bare_predict_images_per_s": harness.summary(bare_rate, 1),
        "predict.n_files": N_FILES,
    }


def run(workdir: Path) -> dict[str, Any]:
    """Measure both figures (about 4 minutes on 2 cores)."""
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "KEDRO_LOGGING_CONFIG")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    os.environ["KEDRO_LOGGING_CONFIG"] = str(LOGGING_CONFIG)
    try:
        return _run(workdir)
    finally:
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _with_response_fields(serving_model: Any, images: np.ndarray) -> Any:
    """The model as reporting packages it: a temperature, conformal sets and an OOD score.

    So the served figure includes every response field (``prediction_set``, ``ood_score``,
    ``in_distribution``); test-time augmentation stays off, as by default.
    """
    from breast_cancer_pipeline.evaluation.ood import METHOD, fit_ood

    features, _ = serving_model.forward(images)
    half = len(images) // 2
    ood = fit_ood(METHOD, features[:half], np.arange(half) % 3, features[half:])
    tuned = serving_model.with_config(
        temperature=0.7, conformal={"method": "lac", "alpha": 0.1, "threshold": 0.3}
    )
    tuned.ood = ood
    return tuned


def _run(workdir: Path) -> dict[str, Any]:
    import logging.config

    import kedro.framework.project  # noqa: F401  (configures logging on import)
    import yaml

    # As the server runs: Kedro's per-request INFO lines would dominate the in-process figure.
    logging.config.dictConfig(yaml.safe_load(LOGGING_CONFIG.read_text()))
    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset
    from breast_cancer_pipeline.imaging import encode_png
    from breast_cancer_pipeline.modeling import build_classifier, set_seed
    from breast_cancer_pipeline.serving import ServingModel

    set_seed(0)
    model = build_classifier(BACKBONE, 3, SIZE, 1, None, {"dropout": 0.2})
    images = _images(N_FILES)
    serving_model = _with_response_fields(ServingModel(model, CONFIG), images)
    ServingModelDataset(str(workdir / "serving_model")).save(serving_model)
    figures = _serving(workdir, serving_model, encode_png(images[0]))
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    figures.update(_batch(workdir, serving_model, images))
    return figures
