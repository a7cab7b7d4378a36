"""Inference pipeline: score a folder of new images (or one request) with the packaged model.

``kedro run --pipelines=inference --params inference.source_dir=<folder>`` runs both nodes.
The served model is the second node alone (:func:`create_serving_pipeline`): kedro-mlflow
bundles it with the packaged model and feeds each request's dataframe in as
``inference_requests``.
"""

from kedro.pipeline import Node, Pipeline

from .nodes import collect_images, predict_requests

#: The dataset a request is fed into when the pipeline is served by MLflow.
SERVING_INPUT = "inference_requests"


def create_serving_pipeline() -> Pipeline:
    """The part of the inference pipeline that MLflow serves: request in, predictions out."""
    return Pipeline(
        [
            Node(
                func=predict_requests,
                inputs=[SERVING_INPUT, "serving_model", "params:inference"],
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


def with_served_model(training: Pipeline) -> Pipeline:
    """Make ``training`` log and register the served model at the end of its MLflow run.

    kedro-mlflow's hook then logs a pyfunc model bundling :func:`create_serving_pipeline`
    with the persisted ``serving_model`` (written by the reporting pipeline) and registers it
    as :data:`REGISTERED_MODEL_NAME`; ``training`` must therefore produce ``serving_model``.

    Args:
        training: A pipeline ending with the reporting pipeline.

    Returns:
        A kedro-mlflow ``PipelineML`` that runs exactly the nodes of ``training``.
    """
    from kedro_mlflow.pipeline import pipeline_ml_factory

    from breast_cancer_pipeline.serving_requirements import serving_requirements

    # No signature: MLflow's schema enforcement cost ~3 ms per request (a third of the served
    # overhead, measured), and the node checks the request itself (a missing `image` column is
    # an HTTP 400 naming it; a bad image is a per-row error). docs/serving.md has the format.
    return pipeline_ml_factory(
        training=training,
        inference=create_serving_pipeline(),
        input_name=SERVING_INPUT,
        log_model_kwargs={
            "name": "model",
            "registered_model_name": REGISTERED_MODEL_NAME,
            "signature": None,
            # What serving imports, not the whole training environment (dvc, optuna...).
            "pip_requirements": serving_requirements(),
        },
    )
