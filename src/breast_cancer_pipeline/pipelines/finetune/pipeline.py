"""Finetune pipeline: train the selected backbone end to end."""

from kedro.pipeline import Node, Pipeline

from .nodes import finetune_classifier


def create_pipeline(**kwargs) -> Pipeline:
    """Create the finetune pipeline."""
    return Pipeline(
        [
            Node(
                func=finetune_classifier,
                inputs=[
                    "model_input",
                    "selected_backbone",
                    "best_head",
                    "augmentation_spec",
                    "finetune_checkpoints",
                    "params:finetune",
                ],
                outputs=[
                    "classifier",
                    "classifier_metadata",
                    # Per-epoch metrics reach MLflow as each epoch ends (published live).
                    "finetune_history",
                    "classifier_mlflow",
                ],
                name="finetune_classifier",
            )
        ]
    )
