"""Inference pipeline: score a folder of new images with the trained classifier."""

from kedro.pipeline import Node, Pipeline

from .nodes import predict_images


def create_pipeline(**kwargs) -> Pipeline:
    """Create the inference pipeline."""
    return Pipeline(
        [
            Node(
                func=predict_images,
                inputs=[
                    "inference_images",
                    "classifier",
                    "classifier_metadata",
                    "params:inference",
                ],
                outputs="predictions",
                name="predict_images",
            )
        ]
    )
