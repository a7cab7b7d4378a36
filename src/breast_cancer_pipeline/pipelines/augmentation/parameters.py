"""The ``augmentation`` parameters (defaults: ``conf/base/parameters_augmentation.yml``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator

from breast_cancer_pipeline.geometry import as_size
from breast_cancer_pipeline.param_schema import Params

#: The smallest side (px) of the model's input.
MIN_SIDE = 16

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
    """The model's input geometry and the augmentation layers inside the model."""

    #: The model's input: one side (px) for a square, or ``[height, width]``.
    image_size: int | tuple[int, int]
    #: How an image is brought to ``image_size`` (:mod:`breast_cancer_pipeline.geometry`).
    resize: Literal["stretch", "letterbox", "crop_foreground"]
    #: ``crop_foreground``: margin around the foreground's box, a fraction of each side.
    crop_margin: Annotated[float, Field(ge=0.0, lt=0.5)]
    flip: Literal["horizontal", "vertical", "horizontal_and_vertical"] | None
    #: Fraction of a full turn.
    rotation: Fraction
    zoom: Fraction
    translation: Fraction
    contrast: Fraction
    preview: Preview

    @field_validator("image_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int | tuple[int, int]:
        fix = "e.g. 224 for a square or [1024, 512] for a portrait mammogram"
        try:
            height, width = as_size(value)
        except ValueError:
            raise ValueError(
                f"must be one positive int (a square) or [height, width], two positive ints; {fix}"
            ) from None
        if min(height, width) < MIN_SIDE:
            raise ValueError(f"each side must be at least {MIN_SIDE} px; {fix}")
        return height if isinstance(value, int) else (height, width)


SCHEMA = AugmentationParams


class TileAttention(Params):
    """The attention-MIL head of ``aggregation: attention`` (``augmentation.tiles.attention``).

    Trained on the frozen tile features of each training image
    (:mod:`breast_cancer_pipeline.training.attention`).
    """

    #: Width of the tiles' embedding and of the gated attention.
    hidden: PositiveInt
    #: Most epochs; training stops earlier when the validation loss stops falling.
    epochs: PositiveInt
    learning_rate: Annotated[float, Field(gt=0.0)]
    #: Epochs without a lower validation loss before training stops.
    patience: PositiveInt
    #: Images (bags of tiles) per training step.
    batch_size: PositiveInt
    #: A training image with more tiles keeps this many, drawn with the seed; null keeps all.
    max_tiles: PositiveInt | None
