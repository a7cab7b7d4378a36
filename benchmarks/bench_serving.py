"""Serving and batch-prediction overheads against the bare model, side by side.

The model is the project's classifier with an EfficientNetB0 backbone (a default candidate) at
224 px, grayscale, random weights: speed does not depend on the weights.

* ``serving.latency_ratio``: p50 latency of one 224-px PNG sent to ``mlflow models serve``
  (the registered pyfunc: HTTP + JSON + base64 + decode + Kedro pipeline + model) over the p50
  of the bare compiled forward pass of the same model on one pre-decoded image, in six
  interleaved blocks (served, bare, in-process pyfunc) of 20 requests each; the ratio is each
  block's, the figure their median. Goal <= 1.3.
* ``serving.ort_latency_ratio``: the same, the model served with ``inference.serving.runtime:
  onnxruntime`` (its ``model.onnx`` on ONNX Runtime; everything else as above) over the same
  bare TensorFlow forward pass. Goal <= 1.0.
* ``serving.peer_latency_ratio``: the served p50 (TensorFlow runtime, every response field on:
  probabilities, label, threshold, thresholded label, conformal set, OOD score) over the p50
  of a peer: ``mlflow models serve`` of the plain Keras model logged with MLflow's ``keras``
  flavour (what ``classifier_mlflow`` logs), sent the same image as the pixel tensor it takes
  (``{"inputs": ...}``: it decodes nothing), answering its probabilities alone. Goal <= 1.0;
  ``serving.peer_latency_ratio_onnxruntime`` is the same with the ONNX Runtime server.
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
from importlib.metadata import version
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
    "serving.ort_latency_ratio": ("<=", 1.0),
    "serving.peer_latency_ratio": ("<=", 1.0),
    "predict.batch_efficiency": (">=", 0.8),
}
#: What a POST on a connection the server has closed raises (``RemoteDisconnected`` is a
#: ``ConnectionResetError``; ``ImproperConnectionState`` follows a request cut short).
CLOSED = (ConnectionError, http.client.ImproperConnectionState)
#: The served and batch command's parameters (conf/base): its batch size is the bare model's too.
INFERENCE = base_params("inference")
#: The registered versions of the served model, by runtime, and the peer's registered name.
VERSIONS = {"tensorflow": "1", "onnxruntime": "2"}
PEER = "plain-keras-classifier"
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


def _register(workdir: Path, runtime: str) -> None:
    """Log and register the served model the way kedro-mlflow's hook does after training.

    Its logged parameters say ``inference.serving.runtime``: ``runtime``.
    """
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
            "params:inference": MemoryDataset(inference_params(runtime)),
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


def inference_params(runtime: str) -> dict[str, Any]:
    """The served ``inference`` parameters with ``serving.runtime`` set to ``runtime``."""
    return {**INFERENCE, "serving": {**INFERENCE["serving"], "runtime": runtime}}


def _log_peer(model: Any, example: np.ndarray) -> None:
    """Log and register the plain Keras classifier with MLflow's ``keras`` flavour (the peer).

    Its signature (a ``uint8`` tensor, from ``example``) makes MLflow cast the request's
    numbers. Not ``input_example``: MLflow 3.17's ``keras`` flavour writes the example before
    it makes the model's folder, and fails.
    """
    import mlflow
    from mlflow.models import infer_signature

    signature = infer_signature(example, model.predict(example, verbose=0))
    with mlflow.start_run():
        mlflow.keras.log_model(
            model,
            name="classifier",
            signature=signature,
            registered_model_name=PEER,
            pip_requirements=[f"keras=={version('keras')}", f"tensorflow=={version('tensorflow')}"],
        )


def peer_body(pixels: np.ndarray) -> bytes:
    """The peer's request for decoded ``pixels`` ``(1, size, size, channels)``: a tensor."""
    return json.dumps({"inputs": pixels.tolist()}).encode()


def peer_probabilities(answer: bytes) -> np.ndarray:
    """The class probabilities of the peer's answer."""
    return np.asarray(json.loads(answer)["predictions"], dtype=np.float32)


def _start_server(
    workdir: Path, model_uri: str, keras_layers: bool = False
) -> tuple[subprocess.Popen, int]:
    """``mlflow models serve`` of ``model_uri``, once it answers ``/ping``.

    ``keras_layers``: the server process imports the project's Keras layers first (a
    ``sitecustomize`` module on its path). The plain Keras classifier needs them to load, and
    MLflow's ``keras`` flavour has no way to import them: without, the peer does not start.
    """
    port = _free_port()
    # `mlflow models serve` starts its web server by name: the venv's bin must be on PATH.
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "KEDRO_LOGGING_CONFIG": str(LOGGING_CONFIG),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if keras_layers:
        site = workdir / "keras_layers"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text("import breast_cancer_pipeline.modeling\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    log = workdir / f"server-{port}.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "models", "serve"]
            + ["-m", model_uri, "--env-manager", "local"]
            + ["-h", "127.0.0.1", "-p", str(port)],
            env=env,
            cwd=workdir,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return server, port
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                if server.poll() is None:
                    os.killpg(server.pid, signal.SIGTERM)
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(
                    f"mlflow models serve {model_uri} did not start:\n{tail}"
                ) from None
            time.sleep(1)


def _serving(workdir: Path, serving_model: Any, image_png: bytes) -> dict[str, Any]:
    from breast_cancer_pipeline.imaging import decode_image

    one = decode_image(image_png, color_mode="grayscale")[None]
    for runtime in VERSIONS:
        _register(workdir, runtime)
    _log_peer(serving_model.model, one)
    servers = {}
    try:
        uris = {k: f"models:/breast-cancer-classifier/{v}" for k, v in VERSIONS.items()}
        for name, uri in uris.items():
            servers[name] = _start_server(workdir, uri)
        servers["peer"] = _start_server(workdir, f"models:/{PEER}/1", keras_layers=True)
        ports = {name: port for name, (_, port) in servers.items()}
        ms = _latencies(ports, serving_model, image_png, one)
    finally:
        for server, _ in servers.values():
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    return {
        "serving.latency_ratio": harness.summary(harness.ratios(ms["served"], ms["bare"])),
        "serving.ort_latency_ratio": harness.summary(harness.ratios(ms["served_ort"], ms["bare"])),
        "serving.peer_latency_ratio": harness.summary(harness.ratios(ms["served"], ms["peer"])),
        "serving.peer_latency_ratio_onnxruntime": harness.summary(
            harness.ratios(ms["served_ort"], ms["peer"])
        ),
        "serving.p50_ms": harness.summary(ms["served"], 2),
        "serving.ort_p50_ms": harness.summary(ms["served_ort"], 2),
        "serving.peer_p50_ms": harness.summary(ms["peer"], 2),
        "serving.bare_forward_p50_ms": harness.summary(ms["bare"], 2),
        "serving.pyfunc_in_process_p50_ms": harness.summary(ms["pyfunc"], 2),
        "serving.image_size": SIZE,
        "serving.blocks": f"{BLOCKS} x {PER_BLOCK} requests",
    }


def _latencies(
    ports: dict[str, int], serving_model: Any, image_png: bytes, one: np.ndarray
) -> dict[str, list[float]]:
    """p50 milliseconds of each block: served (both runtimes), bare, pyfunc in process, peer."""
    image = base64.b64encode(image_png).decode()
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[image]]}}).encode()
    clients = {name: _Client(port) for name, port in ports.items()}
    expected = serving_model.predict_proba(one)[0]
    keras_proba = serving_model.model.predict(one, verbose=0)[0]

    def served(runtime: str) -> Any:
        client = clients[runtime]

        def call() -> None:
            prediction = json.loads(client.post("/invocations", body))["predictions"][0]
            assert prediction["error"] == "" and prediction["prediction_set"] is not None
            assert abs(prediction["p_malignant"] - expected[1]) < 1e-4, prediction

        return call

    def peer() -> None:
        proba = peer_probabilities(clients["peer"].post("/invocations", peer_request))
        assert np.abs(proba[0] - keras_proba).max() < 1e-4, proba

    peer_request = peer_body(one)
    # The same request through the pyfunc in this process: the split between the HTTP
    # server and the model's own pipeline (decode, Kedro run, frame).
    import mlflow
    import pandas as pd

    pyfunc = mlflow.pyfunc.load_model(f"models:/breast-cancer-classifier/{VERSIONS['tensorflow']}")
    frame = pd.DataFrame({"image": [image]})
    in_process = lambda: pyfunc.predict(frame)  # noqa: E731
    bare = lambda: serving_model.predict_proba(one)  # noqa: E731
    calls = {
        "tensorflow": served("tensorflow"),
        "onnxruntime": served("onnxruntime"),
        "peer": peer,
    }
    for _ in range(WARM_UP):  # the first calls trace for seconds: a new connection each
        for name, call in calls.items():
            clients[name].close()
            call()
        bare()
        in_process()

    def block(name: str | None, fn: Any) -> Any:
        def measure() -> float:
            if name is not None:  # untimed: the connection idled through the other blocks
                clients[name].close()
                fn()
            return _p50_ms(fn, PER_BLOCK)

        return measure

    try:
        return harness.interleave(
            {
                "served": block("tensorflow", calls["tensorflow"]),
                "served_ort": block("onnxruntime", calls["onnxruntime"]),
                "bare": block(None, bare),
                "pyfunc": block(None, in_process),
                "peer": block("peer", peer),
            },
            repeats=BLOCKS,
        )
    finally:
        for client in clients.values():
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


def _with_onnx(serving_model: Any) -> Any:
    """The model carrying its ``model.onnx``, as reporting's export packages it."""
    from breast_cancer_pipeline.serving.export import saved_model, served_network, to_onnx

    with saved_model(served_network(serving_model)) as saved:
        graph = to_onnx(saved, INFERENCE["export"]["opset"])
    return serving_model.with_exports({"onnx": graph})


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
    serving_model = _with_onnx(_with_response_fields(ServingModel(model, CONFIG), images))
    ServingModelDataset(str(workdir / "serving_model")).save(serving_model)
    figures = _serving(workdir, serving_model, encode_png(images[0]))
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    figures.update(_batch(workdir, serving_model, images))
    return figures
