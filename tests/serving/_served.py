"""A tiny served model for the serving tests: built, packaged, logged and registered as a
training run does, and the clients that talk to it (in-process ASGI or over HTTP)."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from tests.params import base_params

CONFIG = {
    "class_names": ["benign", "malignant", "normal"],
    "image_size": 32,
    "channels": 1,
    "color_mode": "grayscale",
    "positive_class": "malignant",
    "threshold": 0.2,
}

#: What reporting writes into serving.json beside CONFIG (the served fixture's model).
SERVED_PROBABILITIES = {
    "tta": {"mode": "flips", "passes": 2, "shift": 0.05},
    "temperature": 1.5,
    "conformal": {"method": "lac", "alpha": 0.1, "threshold": 0.3},
}

#: The levels' operating points as reporting writes them (level_operating_points.json), which
#: the served fixture's model carries: a request's rows sharing a key get the level's answer.
LEVEL_OPERATING_POINTS = {
    "aggregation": "mean",
    "positive_class": "malignant",
    "levels": {
        "patient": {"columns": ["group"], "threshold": 0.41},
        "breast": {"columns": ["group", "laterality"], "threshold": 0.37},
        "exam": {"columns": ["group", "study"], "threshold": 0.33},
    },
}


def tiny_serving_model():
    """A random small CNN with an out-of-distribution score fitted on noise images."""
    from breast_cancer_pipeline.evaluation.ood import METHOD, fit_ood
    from breast_cancer_pipeline.modeling import build_classifier, set_seed
    from breast_cancer_pipeline.serving import ServingModel

    set_seed(0)
    model = build_classifier("small_cnn", 3, 32, 1, None, {"dropout": 0.0})
    bare = ServingModel(model, CONFIG)
    noise = np.random.default_rng(0).integers(0, 255, (24, 32, 32, 1), dtype=np.uint8)
    features, _ = bare.forward(noise)
    ood = fit_ood(METHOD, features[:12], np.arange(12) % 3, features[12:])
    return ServingModel(model, CONFIG, ood=ood)


#: The tiling of the tiny tile model: 32-px tiles side by side, the 3 best averaged.
TILES = {"size": 32, "stride": 32, "aggregation": "top_k_mean", "top_k": 3}
#: A model trained on tiles (RGB): its input is the tile, ``tiles`` as packaging writes it.
TILE_CONFIG = {**CONFIG, "channels": 3, "color_mode": "rgb"}


def tiny_tile_model():
    """A random small CNN on 32-px RGB tiles, with an out-of-distribution score of noise tiles."""
    from breast_cancer_pipeline.evaluation.ood import METHOD, fit_ood
    from breast_cancer_pipeline.modeling import build_classifier, set_seed
    from breast_cancer_pipeline.serving import ServingModel
    from breast_cancer_pipeline.tiles import TileSpec

    set_seed(0)
    model = build_classifier("small_cnn", 3, 32, 3, None, {"dropout": 0.0})
    config = {**TILE_CONFIG, "tiles": TileSpec.from_params(TILES).config()}
    bare = ServingModel(model, config)
    noise = np.random.default_rng(0).integers(0, 255, (24, 32, 32, 3), dtype=np.uint8)
    features, _ = bare.forward(noise)
    ood = fit_ood(METHOD, features[:12], np.arange(12) % 3, features[12:])
    return ServingModel(model, config, ood=ood)


def served_pipeline(training):
    """``training`` wired to log and register the served model, as the pipeline registry does."""
    from breast_cancer_pipeline.pipelines.inference.pipeline import (
        SERVING_INPUT,
        create_serving_pipeline,
    )
    from breast_cancer_pipeline.serving import with_served_model

    return with_served_model(training, create_serving_pipeline(), SERVING_INPUT)


def log_and_register(
    tmp_path: Path,
    exports: dict[str, bytes] | None = None,
    model=None,
    probabilities: dict | None = None,
    **inference,
) -> None:
    """What kedro-mlflow's hook does at the end of a training run, on a tiny model.

    ``exports`` (``{"onnx": bytes}``) are packaged with the model, as reporting's export does;
    ``model`` (a served model, e.g. :func:`tiny_tile_model`) instead of the tiny one, with
    ``probabilities`` over :data:`SERVED_PROBABILITIES` and ``inference`` over the logged
    ``inference`` parameters (``batch_size=8``).
    """
    import mlflow
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.pipeline import Node, Pipeline
    from kedro_mlflow.mlflow import KedroPipelineModel

    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset

    # Served as reporting packages it: test-time views, a temperature, a conformal threshold,
    # the levels' operating points.
    packaged = (model or tiny_serving_model()).with_config(
        **{**SERVED_PROBABILITIES, **(probabilities or {})}, levels=LEVEL_OPERATING_POINTS
    )
    if exports:
        packaged = packaged.with_exports(exports)
    ServingModelDataset(str(tmp_path / "serving_model")).save(packaged)
    training = Pipeline([Node(lambda: None, None, "serving_model", name="train")])
    pipeline_ml = served_pipeline(training)
    catalog = DataCatalog(
        {
            "serving_model": ServingModelDataset(str(tmp_path / "serving_model")),
            "params:inference": MemoryDataset(
                base_params("inference", **{"batch_size": 8, **inference})
            ),
            "params:reporting.gradcam": MemoryDataset(base_params("reporting")["gradcam"]),
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, payload: bytes) -> tuple[int, dict]:
    """POST JSON ``payload`` to ``url``: the status and the JSON answer."""
    request = urllib.request.Request(
        url, data=payload, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def request_body(cells: list[str], columns=("image",)) -> bytes:
    """A ``dataframe_split`` request with ``cells`` in every column."""
    data = [[c] * len(columns) for c in cells]
    return json.dumps({"dataframe_split": {"columns": list(columns), "data": data}}).encode()


def asgi_post(app, body: bytes, *, declare_length: bool = True) -> tuple[int, dict]:
    """POST ``body`` to /invocations of an ASGI ``app`` in-process, 1 kB per message."""
    headers = {"content-type": "application/json"}
    if declare_length:
        headers["content-length"] = str(len(body))
    status, answer = asgi_request(app, body, headers=headers, chunk=1000)
    return status, json.loads(answer)


def asgi_request(
    app, body: bytes = b"", *, method="POST", path="/invocations", headers=None, chunk=1 << 20
) -> tuple[int, bytes]:
    """One request to an ASGI ``app`` in-process, ``chunk`` bytes per message: status, body."""
    if headers is None:
        headers = {"host": "127.0.0.1:5001", "content-type": "application/json"}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 5001),
    }
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])
