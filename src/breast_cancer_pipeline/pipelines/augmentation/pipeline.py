"""Augmentation pipeline: model-input arrays, augmentation spec, preview grid."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_augmentation_spec, prepare_model_input, preview_augmentation


def create_pipeline(**kwargs) -> Pipeline:
    """Create the augmentation pipeline."""
    return Pipeline(
        [
            Node(
                func=prepare_model_input,
                inputs=["intermediate_images", "validated_manifest", "params:augmentation"],
                outputs="model_input",
                name="prepare_model_input",
            ),
            Node(
                func=build_augmentation_spec,
                inputs="params:augmentation",
                outputs="augmentation_spec",
                name="build_augmentation_spec",
            ),
            Node(
                func=preview_augmentation,
                inputs=["model_input", "augmentation_spec", "params:augmentation"],
                outputs="augmentation_preview",
                name="preview_augmentation",
            ),
        ]
    )
