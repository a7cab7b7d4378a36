"""Ingestion pipeline: source folder → PNGs in 02_intermediate and the manifest."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    collapse_duplicates,
    collect_conversion,
    collect_masks,
    index_source,
    plan_conversion,
    publish_conversion,
    split_manifest,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Create the ingestion pipeline.

    ``plan_conversion`` returns one task per image; saving it to ``intermediate_images``
    (an ``ImageStoreDataset``) converts, in parallel, only what changed since the last run,
    and stages the new PNGs. The external test site (``external_raw_images``, from
    ``ingestion.external_dir``; empty when null) is indexed and converted beside the source,
    under ``external/``, and gets split ``external``. Once the manifest is saved,
    ``publish_conversion`` saves a commit to ``published_images`` (the same store), which
    swaps them in and removes superseded ones. Lesion masks (``ingestion.mask_pattern``,
    ``ingestion.csv.mask_column``) are converted with their image, merged into one PNG beside
    it (the manifest's ``mask_path``); ``collect_masks`` lists every mask file for the gate.
    """
    return Pipeline(
        [
            Node(
                func=index_source,
                inputs=["raw_images", "params:ingestion", "external_raw_images"],
                outputs="source_inventory",
                name="index_source",
            ),
            Node(
                func=plan_conversion,
                inputs=[
                    "raw_images",
                    "source_inventory",
                    "params:ingestion",
                    "external_raw_images",
                    "params:cluster",
                ],
                outputs="intermediate_images",
                name="convert_images",
            ),
            Node(
                func=collect_conversion,
                inputs=["intermediate_images", "source_inventory", "params:ingestion"],
                outputs=["image_info", "rejected_files"],
                name="collect_conversion",
            ),
            Node(
                func=collapse_duplicates,
                inputs="image_info",
                outputs=["unique_image_info", "duplicate_images"],
                name="collapse_duplicates",
            ),
            Node(
                func=split_manifest,
                inputs=["unique_image_info", "params:ingestion"],
                outputs="manifest",
                name="split_manifest",
            ),
            Node(
                func=collect_masks,
                inputs=[
                    "intermediate_images",
                    "manifest",
                    "raw_images",
                    "params:ingestion",
                    "external_raw_images",
                ],
                outputs="mask_table",
                name="collect_masks",
            ),
            Node(
                func=publish_conversion,
                inputs="manifest",
                outputs="published_images",
                name="publish_conversion",
            ),
        ]
    )
