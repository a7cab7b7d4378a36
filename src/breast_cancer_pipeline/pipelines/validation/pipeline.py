"""Validation pipeline: the data gate between ingestion and training."""

from kedro.pipeline import Node, Pipeline

from .nodes import enforce_gate, run_expectations


def create_pipeline(**kwargs) -> Pipeline:
    """The data gate: validate the manifest, write the reports, stop the run on errors."""
    return Pipeline(
        [
            Node(
                func=run_expectations,
                inputs=[
                    "manifest",
                    "params:validation",
                    "params:ingestion",
                    "mask_table",
                    "params:augmentation",
                ],
                outputs=[
                    "validation_results",
                    "validation_metrics",
                    "validation_data_docs",
                    "validation_report",
                ],
                name="run_expectations",
            ),
            Node(
                func=enforce_gate,
                inputs=["manifest", "validation_results", "params:validation"],
                outputs="validated_manifest",
                name="enforce_gate",
            ),
        ]
    )
