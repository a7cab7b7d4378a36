"""demo_data pipeline: writes the synthetic BUSI-like demo dataset to data/01_raw/demo."""

from kedro.pipeline import Node, Pipeline

from .nodes import generate_demo_dataset


def create_pipeline(**kwargs) -> Pipeline:
    """Create the demo_data pipeline."""
    return Pipeline(
        [
            Node(
                func=generate_demo_dataset,
                inputs="params:demo_data",
                outputs="demo_raw_images",
                name="generate_demo_dataset",
            )
        ]
    )
