"""Inference pipeline: score a folder of new images (or one request) with the packaged model.

``kedro run --pipelines=inference --params inference.source_dir=<folder>`` runs both nodes.
The served model is the second node alone (:func:`create_serving_pipeline`): kedro-mlflow
bundles it with the packaged model and feeds each request's dataframe in as
``inference_requests``.
"""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline

from .nodes import EXPLAIN_COLUMN, IMAGE_COLUMN, collect_images, predict_requests

#: The dataset a request is fed into when the pipeline is served by MLflow.
SERVING_INPUT = "inference_requests"


def create_serving_pipeline() -> Pipeline:
    """The part of the inference pipeline that MLflow serves: request in, predictions out."""
    return Pipeline(
        [
            Node(
                func=predict_requests,
                inputs=[
                    SERVING_INPUT,
                    "serving_model",
                    "params:inference",
                    "params:reporting.gradcam",
                ],
                outputs="predictions",
                name="predict_requests",
            )
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    """Create the inference pipeline (the batch command)."""
    return (
        Pipeline(
            [
                Node(
                    func=collect_images,
                    inputs="inference_images",
                    outputs=SERVING_INPUT,
                    name="collect_images",
                )
            ]
        )
        + create_serving_pipeline()
    )


#: Name of the served model in the MLflow model registry.
REGISTERED_MODEL_NAME = "breast-cancer-classifier"


#: Optional request columns echoed back with each prediction (the node prefers ``path``).
ID_COLUMNS = ("id", "path")
#: Side in pixels of the example request's image (any size is resized by the model's decoder).
EXAMPLE_SIZE = 32


def serving_signature() -> Any:
    """The served model's MLflow signature: the request columns.

    ``image`` (base64 text of an image file) is required, ``id`` and ``path`` (any type) are
    optional and echoed back, ``explain`` (true/false per row, optional) asks for the row's
    Grad-CAM overlay (``gradcam_png``; any type here, so that the node refuses a value such
    as "yes" instead of MLflow reading every non-empty text as true). MLflow checks a request
    against it before the model runs (about 0.2 ms): a request without ``image`` is an HTTP
    400 naming the missing and the extra columns; undeclared columns are dropped. The output
    (``label``, ``p_<class>``...) depends on the trained classes and is described in
    docs/serving.md.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    columns = [ColSpec("string", IMAGE_COLUMN)]
    columns += [ColSpec(AnyType(), name, required=False) for name in (*ID_COLUMNS, EXPLAIN_COLUMN)]
    return ModelSignature(inputs=Schema(columns))


def example_request() -> Any:
    """A one-row request: a small grey gradient PNG, base64-encoded, with an ``id``.

    MLflow stores it with the model and, when logging, scores it once through the logged
    model (a request that fails there is reported in the run's log).
    """
    import base64
    import io

    import numpy as np
    import pandas as pd
    from PIL import Image

    ramp = np.linspace(0, 255, EXAMPLE_SIZE, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.tile(ramp, (EXAMPLE_SIZE, 1))).save(buffer, format="PNG")
    return pd.DataFrame(
        {IMAGE_COLUMN: [base64.b64encode(buffer.getvalue()).decode()], "id": ["example"]}
    )


def with_served_model(training: Pipeline) -> Pipeline:
    """Make ``training`` log and register the served model at the end of its MLflow run.

    kedro-mlflow's hook then logs a pyfunc model bundling :func:`create_serving_pipeline`
    with the persisted ``serving_model`` (written by the reporting pipeline), with
    :func:`serving_signature` and :func:`example_request`, and registers it as
    :data:`REGISTERED_MODEL_NAME`; ``training`` must therefore produce ``serving_model``.
    :class:`~breast_cancer_pipeline.hooks.ChampionHook` then decides whether the new version
    becomes ``@champion``.

    Args:
        training: A pipeline ending with the reporting pipeline.

    Returns:
        A kedro-mlflow ``PipelineML`` that runs exactly the nodes of ``training``.
    """
    from kedro_mlflow.pipeline import pipeline_ml_factory

    from breast_cancer_pipeline.serving_requirements import serving_requirements

    return pipeline_ml_factory(
        training=training,
        inference=create_serving_pipeline(),
        input_name=SERVING_INPUT,
        log_model_kwargs={
            "name": "model",
            "registered_model_name": REGISTERED_MODEL_NAME,
            "signature": serving_signature(),
            "input_example": example_request(),
            # What serving imports, not the whole training environment (dvc, optuna...).
            "pip_requirements": serving_requirements(),
        },
    )
