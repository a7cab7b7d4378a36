"""The ``augmentation`` parameters (defaults: ``conf/base/parameters_augmentation.yml``)."""

from __future__ import annotations

from collections.abc import Mapping
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


class Stain(Params):
    """Stain normalisation and HED jitter of RGB histopathology (``stain.py``)."""

    #: Normalisation to a reference fitted on the training images, inside the model.
    normalize: Literal["macenko", "reinhard"] | None
    #: HED augmentation strength, training only (``None`` or 0: off).
    jitter: Fraction | None
    #: Training images the reference is fitted on.
    reference_images: PositiveInt


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
    stain: Stain

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


def check_against(parameters: Mapping[str, Any]) -> list[str]:
    """Problems of ``augmentation`` with other blocks: stain settings need RGB images.

    Args:
        parameters: The merged parameters (``augmentation`` already valid).

    Returns:
        One line per problem, naming the keys and the fix.
    """
    stain = parameters["augmentation"]["stain"]
    color_mode = parameters.get("ingestion", {}).get("color_mode")
    used = [f"{key}={stain[key]!r}" for key in ("normalize", "jitter") if stain[key]]
    if used and color_mode == "grayscale":
        return [
            f"augmentation.stain ({', '.join(used)}) needs RGB images but "
            "ingestion.color_mode = 'grayscale': set ingestion.color_mode: rgb (histopathology), "
            "or augmentation.stain.normalize and jitter to null"
        ]
    return []
