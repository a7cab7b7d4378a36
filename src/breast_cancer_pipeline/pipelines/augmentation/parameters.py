"""The ``augmentation`` parameters (defaults: ``conf/base/parameters_augmentation.yml``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator

from breast_cancer_pipeline.geometry import as_size
from breast_cancer_pipeline.param_schema import Params
from breast_cancer_pipeline.tiles import (
    ATTENTION_DEFAULTS,
    TILE_AGGREGATIONS,
    TILE_LABELS,
    TileSpec,
)

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


#: The smallest tile side (px).
MIN_TILE = 8

_TILE_DEFAULTS = {name: field.default for name, field in TileSpec.__dataclass_fields__.items()}


class TileAttention(Params):
    """The attention-MIL head of ``aggregation: attention`` (``augmentation.tiles.attention``).

    Trained on the frozen tile features of each training image
    (:mod:`breast_cancer_pipeline.training.attention`); every key defaults to
    :data:`~breast_cancer_pipeline.tiles.ATTENTION_DEFAULTS` (listed in ``conf/base``).
    """

    #: Width of the tiles' embedding and of the gated attention.
    hidden: PositiveInt = ATTENTION_DEFAULTS["hidden"]
    #: Most epochs; training stops earlier when the validation loss stops falling.
    epochs: PositiveInt = ATTENTION_DEFAULTS["epochs"]
    learning_rate: Annotated[float, Field(gt=0.0)] = ATTENTION_DEFAULTS["learning_rate"]
    #: Epochs without a lower validation loss before training stops.
    patience: PositiveInt = ATTENTION_DEFAULTS["patience"]
    #: Images (bags of tiles) per training step.
    batch_size: PositiveInt = ATTENTION_DEFAULTS["batch_size"]
    #: A training image with more tiles keeps this many, drawn with the seed; null keeps all.
    max_tiles: PositiveInt | None = ATTENTION_DEFAULTS["max_tiles"]


class TilesParams(Params):
    """``augmentation.tiles``: the network trains on tiles cut from each image.

    ``size`` and ``stride`` are required; the other keys default to
    :class:`~breast_cancer_pipeline.tiles.TileSpec`'s values (listed in ``conf/base``).
    """

    #: Tile side (px, after ``scale``): the network's input.
    size: Annotated[int, Field(ge=MIN_TILE)]
    #: Step between tiles (px, after ``scale``); 0 is refused.
    stride: PositiveInt
    #: Downscale factor before tiling (1 = full resolution).
    scale: Annotated[float, Field(ge=1.0)] = _TILE_DEFAULTS["scale"]
    #: Tiles with a smaller foreground share are dropped.
    min_foreground: Annotated[float, Field(ge=0.0, le=1.0)] = _TILE_DEFAULTS["min_foreground"]
    max_per_image: PositiveInt | None = _TILE_DEFAULTS["max_per_image"]
    aggregation: Literal[*TILE_AGGREGATIONS] = _TILE_DEFAULTS["aggregation"]
    top_k: PositiveInt = _TILE_DEFAULTS["top_k"]
    labels: Literal[*TILE_LABELS] = _TILE_DEFAULTS["labels"]
    #: ``labels: mask``: the share of a tile a lesion must cover for the image's label.
    min_lesion: Annotated[float, Field(gt=0.0, le=1.0)] = _TILE_DEFAULTS["min_lesion"]
    #: ``labels: mask``: the class of tiles outside lesions, or null (internal background).
    background_label: Annotated[str, Field(min_length=1)] | None = _TILE_DEFAULTS[
        "background_label"
    ]
    #: ``aggregation: attention``: the attention-MIL head over the tiles' features.
    attention: TileAttention = TileAttention()


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
    #: Tiles cut from each image (:mod:`breast_cancer_pipeline.tiles`); null: whole images.
    tiles: TilesParams | None

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
    """Problems of ``augmentation`` with other blocks (:func:`param_schema.problems_across`).

    Stain settings need RGB images; ``tiles.labels: mask`` needs masks
    (``ingestion.mask_pattern`` or ``ingestion.csv.mask_column``).

    Args:
        parameters: The merged parameters (``augmentation`` already valid).

    Returns:
        One line per problem, naming the keys and the fix.
    """
    return [*_stain_problems(parameters), *_tile_label_problems(parameters)]


def _stain_problems(parameters: Mapping[str, Any]) -> list[str]:
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


def _tile_label_problems(parameters: Mapping[str, Any]) -> list[str]:
    tiles = parameters["augmentation"].get("tiles")
    if not isinstance(tiles, Mapping) or tiles.get("labels") != "mask":
        return []
    ingestion = parameters.get("ingestion") or {}
    csv = ingestion.get("csv") if isinstance(ingestion.get("csv"), Mapping) else {}
    if ingestion.get("mask_pattern") or csv.get("mask_column"):
        return []
    return [
        "augmentation.tiles.labels = 'mask' needs lesion masks, but neither "
        "ingestion.mask_pattern nor ingestion.csv.mask_column is set; set one (e.g. "
        "ingestion.mask_pattern: '{stem}_mask.png' for BUSI) or use labels: image"
    ]
