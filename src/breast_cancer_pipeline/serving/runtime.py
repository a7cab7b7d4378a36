"""The runtimes that run the served network: TensorFlow, ONNX Runtime and LiteRT.

``inference.serving.runtime`` chooses what runs the forward pass of the server and of the
batch command (:func:`served_by`):

* ``tensorflow``: the Keras classifier through one compiled ``tf.function``
  (:func:`~breast_cancer_pipeline.serving.model.compiled_forward`);
* ``onnxruntime``: ``model.onnx`` (:mod:`~breast_cancer_pipeline.serving.export`), shipped in
  the packaged model, on ONNX Runtime's CPU provider.

Everything else is the same for both (decoding, test-time views, temperature, threshold,
conformal sets, the out-of-distribution score on the graph's ``features``), so the answers
differ only in the last digits of the probabilities and scores. Grad-CAM always runs on the
Keras classifier: it needs gradients, which an inference graph does not give.

The LiteRT interpreter (:func:`litert_forward`) runs ``model.tflite`` for the parity check;
the server does not use it. ONNX Runtime's telemetry is switched off before its first session.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np

from breast_cancer_pipeline.serving.export import EXPORT_FILES, INPUT_NAME, OUTPUT_NAMES, Forward

#: The values of ``inference.serving.runtime``.
RUNTIMES = ("tensorflow", "onnxruntime")
#: The runtime of a model packaged before the parameter existed.
DEFAULT_RUNTIME = "tensorflow"

_served: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def onnx_forward(graph: bytes) -> Forward:
    """A forward pass of an exported ONNX graph on ONNX Runtime's CPU provider.

    One session, its worker threads (as many as physical cores) not spinning between runs;
    safe to call from several threads at once.

    Args:
        graph: The bytes of ``model.onnx``.

    Returns:
        A function from a ``uint8`` batch to ``(features, probabilities)`` (``float32``).
    """
    import onnxruntime as ort

    ort.disable_telemetry_events()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no per-session notices in the server's log
    # Worker threads sleep between runs instead of spin-waiting: spinning takes the CPU from
    # the server's own threads (HTTP, decoding) and from the other intra-op thread on a
    # machine with few cores (docs: Benchmarks, Serving).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def forward(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features, proba = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        return features, proba

    return forward


def litert_forward(graph: bytes) -> Forward:
    """A forward pass of an exported LiteRT flatbuffer on ai-edge-litert's interpreter.

    Falls back to TensorFlow's own interpreter (``tf.lite.Interpreter``) where ai-edge-litert
    has no wheel (Python 3.13). Not thread-safe: one caller at a time.

    Args:
        graph: The bytes of ``model.tflite``.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - Python 3.13
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    runner = Interpreter(model_content=graph).get_signature_runner()

    def forward(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = runner(**{INPUT_NAME: images})
        return out["features"], out["probabilities"]

    return forward


def check_runtime(runtime: str) -> str:
    """``runtime`` if it is one of :data:`RUNTIMES`.

    Raises:
        ValueError: Another value, naming the parameter.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"inference.serving.runtime must be one of {RUNTIMES}, got {runtime!r}")
    return runtime


def served_by(serving_model: Any, runtime: str) -> Any:
    """The packaged model with its forward pass run by ``runtime``.

    The ONNX Runtime session is made once per packaged model and kept while the model is.

    Args:
        serving_model: A :class:`~breast_cancer_pipeline.serving.ServingModel`.
        runtime: One of :data:`RUNTIMES`.

    Returns:
        ``serving_model`` itself for ``tensorflow``; for ``onnxruntime`` the same model whose
        forward pass runs ``model.onnx`` (:attr:`ServingModel.model`, the Keras classifier,
        still gives Grad-CAM).

    Raises:
        ValueError: An unknown runtime, or ``onnxruntime`` for a model packaged without
            ``model.onnx``.
    """
    if check_runtime(runtime) == "tensorflow":
        return serving_model
    with _lock:
        if serving_model not in _served:
            graph = _exported(serving_model.exports, "onnx")
            _served[serving_model] = serving_model.with_forward(onnx_forward(graph))
        return _served[serving_model]


def _exported(exports: Mapping[str, bytes], kind: str) -> bytes:
    if kind not in exports:
        raise ValueError(
            f"the packaged model has no {EXPORT_FILES[kind]}, which inference.serving.runtime "
            f"= onnxruntime runs: package it with inference.export.{kind}: true (see "
            f"metrics.json's export.{kind} for why an export was not shipped), or serve it "
            "with inference.serving.runtime: tensorflow"
        )
    return exports[kind]


def use_runtime(pyfunc_model: Any, runtime: str | None = None) -> str:
    """Run a served pyfunc model's forward pass on ``runtime``, prepared before any request.

    The runtime is the model's logged ``inference.serving.runtime`` unless ``runtime`` says
    otherwise (``RUNTIME=onnxruntime make serve``): it is then written into the logged
    parameters the way kedro-mlflow's prediction parameters are. The ONNX Runtime session is
    made here, so a model without ``model.onnx`` stops the server at its start.

    Args:
        pyfunc_model: The loaded pyfunc model (a kedro-mlflow pipeline model of this project).
        runtime: One of :data:`RUNTIMES`, or ``None``/empty for the logged one.

    Returns:
        The runtime in use.

    Raises:
        ValueError: An unknown runtime, or ``onnxruntime`` without ``model.onnx``.
    """
    catalog = pyfunc_model.unwrap_python_model().loaded_catalog
    params = catalog.load("params:inference")
    runtime = runtime or params["serving"].get("runtime", DEFAULT_RUNTIME)
    served_by(catalog.load("serving_model"), runtime)
    serving = {**params["serving"], "runtime": runtime}
    catalog["params:inference"].save({**params, "serving": serving})
    return runtime
