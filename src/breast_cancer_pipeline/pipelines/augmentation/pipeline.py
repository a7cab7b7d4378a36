"""Augmentation pipeline: model-input arrays, augmentation spec, preview grid."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    build_augmentation_spec,
    prepare_external_input,
    prepare_model_input,
    preview_augmentation,
)
from .stain_reference import fit_stain_reference
from .tiling import tile_images


def create_pipeline(**kwargs) -> Pipeline:
    """Create the augmentation pipeline.

    ``model_input`` holds train, val and test; ``external_model_input`` the external test
    site (``x_external``, ``y_external``, ``paths_external``; 0 rows without one), which only
    reporting reads. ``tile_images`` lays out the tiles of every image
    (``augmentation.tiles``; no row when it is null), which both arrays then hold.
    ``stain_reference`` is fitted on training images (or tiles)
    (``augmentation.stain.normalize``) and travels in the augmentation spec into the model.
    """
    return Pipeline(
        [
            Node(
                func=tile_images,
                inputs=[
                    "intermediate_images",
                    "validated_manifest",
                    "params:augmentation",
                    "params:cluster",
                ],
                outputs="tile_layout",
                name="tile_images",
            ),
            Node(
                func=prepare_model_input,
                inputs=[
                    "intermediate_images",
                    "validated_manifest",
                    "params:augmentation",
                    "params:cluster",
                    "tile_layout",
                ],
                outputs="model_input",
                name="prepare_model_input",
            ),
            # The external test site, apart: no training or selection node reads it.
            Node(
                func=prepare_external_input,
                inputs=[
                    "intermediate_images",
                    "validated_manifest",
                    "params:augmentation",
                    "params:cluster",
                    "tile_layout",
                ],
                outputs="external_model_input",
                name="prepare_external_input",
            ),
            Node(
                func=fit_stain_reference,
                inputs=["model_input", "params:augmentation"],
                outputs="stain_reference",
                name="fit_stain_reference",
            ),
            Node(
                func=build_augmentation_spec,
                inputs=["params:augmentation", "stain_reference"],
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
