"""The ``demo_data`` pipeline: write a synthetic BUSI-like dataset to ``data/01_raw/demo/``.

It also writes a second synthetic site (``data/01_raw/demo_external/``, the demo's external
test) and the record of the images that label noise filed under another class.
"""

from kedro.pipeline import Node, Pipeline

from .nodes import generate_demo_dataset, generate_external_site, label_flip_record


def create_pipeline(**kwargs) -> Pipeline:
    """Create the ``demo_data`` pipeline.

    Returns:
        A pipeline turning ``params:demo_data`` into the ``demo_raw_images`` and
        ``demo_external_images`` partitions (relative file path -> encoded bytes) and the
        ``demo_label_flips`` table.
    """
    return Pipeline(
        [
            Node(
                func=generate_demo_dataset,
                inputs="params:demo_data",
                outputs="demo_raw_images",
                name="generate_demo_dataset",
            ),
            Node(
                func=label_flip_record,
                inputs="params:demo_data",
                outputs="demo_label_flips",
                name="record_label_flips",
            ),
            Node(
                func=generate_external_site,
                inputs="params:demo_data",
                outputs="demo_external_images",
                name="generate_external_site",
            ),
        ]
    )
