"""The ``augmentation`` parameters (defaults: ``conf/base/parameters_augmentation.yml``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from breast_cancer_pipeline.param_schema import Params

#: A transform's strength as a fraction (0 turns the transform off).
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class Preview(Params):
    """The preview grid (``data/08_reporting/augmentation_preview.png``)."""

    #: Training images shown, one per row.
    rows: PositiveInt
    #: Augmented versions beside each.
    augmented_per_image: NonNegativeInt
    seed: NonNegativeInt
    #: Resolution of the PNG.
    figure_dpi: PositiveInt


class AugmentationParams(Params):
    """The model's input size and the augmentation layers inside the model."""

    #: Square side (px) every image is resized to.
    image_size: Annotated[int, Field(ge=16)]
    flip: Literal["horizontal", "vertical", "horizontal_and_vertical"] | None
    #: Fraction of a full turn.
    rotation: Fraction
    zoom: Fraction
    translation: Fraction
    contrast: Fraction
    preview: Preview


SCHEMA = AugmentationParams
