"""Inference pipeline: score a folder of new images (or one request) with the packaged model.

``kedro run --pipelines=inference --params inference.source_dir=<folder>`` lists the files and
scores them (:func:`create_pipeline`): ``predictions`` and, for a model packaged with levels,
one table per level (``batch_level_predictions``), its images decoded on the Dask cluster of
``cluster.address`` when one is set. The served model is the scoring node alone
(:func:`create_serving_pipeline`): kedro-mlflow bundles it with the packaged model
(:func:`breast_cancer_pipeline.serving.with_served_model`) and feeds each request's dataframe
in as ``inference_requests``.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from .nodes import collect_images, predict_files, predict_requests

#: The dataset a request is fed into when the pipeline is served by MLflow.
SERVING_INPUT = "inference_requests"
#: What the scoring node reads beside the request.
_SCORING_INPUTS = [SERVING_INPUT, "serving_model", "params:inference", "params:reporting.gradcam"]


def create_serving_pipeline() -> Pipeline:
    """The part of the inference pipeline that MLflow serves: request in, predictions out."""
    return Pipeline(
        [
            Node(
                func=predict_requests,
                inputs=_SCORING_INPUTS,
                outputs="predictions",
                name="predict_requests",
            )
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    """Create the inference pipeline (the batch command)."""
    return Pipeline(
        [
            Node(
                func=collect_images,
                inputs=["inference_images", "params:ingestion.column_patterns"],
                outputs=SERVING_INPUT,
                name="collect_images",
            ),
            Node(
                func=predict_files,
                inputs=[*_SCORING_INPUTS, "params:cluster"],
                outputs=["predictions", "batch_level_predictions"],
                name="predict_files",
            ),
        ]
    )
