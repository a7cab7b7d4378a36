"""The ``demo_data`` pipeline: write a synthetic BUSI-like dataset to ``data/01_raw/demo/``."""

from kedro.pipeline import Node, Pipeline

from .nodes import generate_demo_dataset


def create_pipeline(**kwargs) -> Pipeline:
    """Create the ``demo_data`` pipeline.

    Returns:
        A one-node pipeline turning ``params:demo_data`` into the ``demo_raw_images``
        partitions (relative file path -> encoded bytes).
    """
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
