"""Ingestion pipeline: source folder → PNGs in 02_intermediate and the manifest."""

from kedro.pipeline import Node, Pipeline

from .nodes import convert_images, index_source, split_manifest


def create_pipeline(**kwargs) -> Pipeline:
    """Create the ingestion pipeline."""
    return Pipeline(
        [
            Node(
                func=index_source,
                inputs=["raw_images", "params:ingestion"],
                outputs="source_inventory",
                name="index_source",
            ),
            Node(
                func=convert_images,
                inputs=["raw_images", "source_inventory", "params:ingestion"],
                outputs=["intermediate_images", "image_info", "rejected_files"],
                name="convert_images",
            ),
            Node(
                func=split_manifest,
                inputs=["image_info", "params:ingestion"],
                outputs="manifest",
                name="split_manifest",
            ),
        ]
    )
