"""Serving: the model, the request guard, packaging, the registry gate and the server.

One module per subject:

* :mod:`~breast_cancer_pipeline.serving.model`: :class:`ServingModel`, the classifier (or
  ensemble) with its configuration, compiled forward pass and probability path;
* :mod:`~breast_cancer_pipeline.serving.tiling`: a request image cut into the tiles a tile
  model reads, scored and answered per image (top tiles, Grad-CAM on a thumbnail);
* :mod:`~breast_cancer_pipeline.serving.levels`: the answer of a patient, breast or exam to
  the rows of a request that share its key;
* :mod:`~breast_cancer_pipeline.serving.guard`: the request limits and the errors a caller
  reads (``inference.serving.*``);
* :mod:`~breast_cancer_pipeline.serving.packaging`: what the logged model carries (signature,
  example request, requirements) and how a training run logs and registers it;
* :mod:`~breast_cancer_pipeline.serving.export`: the served network as ``model.onnx`` and
  ``model.tflite``, and their parity with Keras;
* :mod:`~breast_cancer_pipeline.serving.runtime`: what runs the forward pass
  (``inference.serving.runtime``: TensorFlow or ONNX Runtime);
* :mod:`~breast_cancer_pipeline.serving.registry`: the registered versions and the
  ``@champion`` gate;
* :mod:`~breast_cancer_pipeline.serving.server`: the model server of ``make serve``
  (``python -m breast_cancer_pipeline.serving``) and its page (``static/``).

Importing the package is cheap: TensorFlow and MLflow are imported only when a model runs,
is packaged or served.
"""

from typing import Any

from breast_cancer_pipeline.serving.guard import (
    check_request,
    image_bytes,
    limit_request_body,
    request_error,
    row_error,
)
from breast_cancer_pipeline.serving.model import (
    CONFIG_KEYS,
    PROBABILITY_DEFAULTS,
    ServingModel,
    check_config,
    compiled_forward,
    penultimate_layer,
)
from breast_cancer_pipeline.serving.packaging import (
    EXPLAIN_COLUMN,
    ID_COLUMNS,
    IMAGE_COLUMN,
    REGISTERED_MODEL_NAME,
    SERVING_DISTRIBUTIONS,
    example_request,
    serving_requirements,
    serving_signature,
    with_served_model,
)
from breast_cancer_pipeline.serving.registry import (
    CHAMPION,
    MODEL_CARD,
    Decision,
    gate,
    record_version,
)
from breast_cancer_pipeline.serving.server import (
    DEFAULT_MODEL_URI,
    ModelInfo,
    ModelNotFoundError,
    create_app,
    load_served_model,
)

__all__ = [
    "CHAMPION",
    "CONFIG_KEYS",
    "DEFAULT_MODEL_URI",
    "EXPLAIN_COLUMN",
    "ID_COLUMNS",
    "IMAGE_COLUMN",
    "MODEL_CARD",
    "PROBABILITY_DEFAULTS",
    "REGISTERED_MODEL_NAME",
    "SERVING_DISTRIBUTIONS",
    "Decision",
    "ModelInfo",
    "ModelNotFoundError",
    "RequestError",
    "ServingModel",
    "check_config",
    "check_request",
    "compiled_forward",
    "create_app",
    "example_request",
    "gate",
    "image_bytes",
    "limit_request_body",
    "load_served_model",
    "penultimate_layer",
    "record_version",
    "request_error",
    "row_error",
    "serving_requirements",
    "serving_signature",
    "with_served_model",
]


def __getattr__(name: str) -> Any:
    # ``serving.RequestError`` (an ``MlflowException``) without importing MLflow with the package.
    if name == "RequestError":
        from breast_cancer_pipeline.serving import guard  # noqa: PLC0415

        return guard.RequestError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
