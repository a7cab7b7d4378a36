"""Inference pipeline: score a folder of new images (or one request) with the packaged model.

``kedro run --pipelines=inference --params inference.source_dir=<folder>`` runs both nodes.
The served model is the second node alone (:func:`create_serving_pipeline`): kedro-mlflow
bundles it with the packaged model (:func:`breast_cancer_pipeline.serving.with_served_model`)
and feeds each request's dataframe in as ``inference_requests``.
"""

from __future__ import annotations

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
                    inputs=["inference_images", "params:ingestion.column_patterns"],
                    outputs=SERVING_INPUT,
                    name="collect_images",
                )
            ]
        )
        + create_serving_pipeline()
    )
