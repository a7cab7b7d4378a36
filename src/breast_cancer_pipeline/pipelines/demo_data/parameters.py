"""The ``demo_data`` parameters (defaults: ``conf/base/parameters_demo_data.yml``).

The model is also the typed configuration the generator reads (``cfg.lesion_radius`` is a
``(min, max)`` tuple of floats, ``cfg.spicules`` of ints).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    StrictBool,
    field_validator,
)

from breast_cancer_pipeline.param_schema import Params

#: The file formats the generator writes (``format_mix`` keys).
ImageFormat = Literal["png", "jpeg", "tiff16"]


def _ordered(pair: tuple) -> tuple:
    if pair[0] > pair[1]:
        raise ValueError(f"must be a [min, max] pair with min <= max, got {list(pair)}")
    return pair


def _range(low: float, high: float, kind: type = float) -> object:
    """A ``[min, max]`` pair of ``kind`` with ``low <= min <= max <= high``."""
    bound = Annotated[kind, Field(ge=low, le=high)]
    return Annotated[tuple[bound, bound], AfterValidator(_ordered)]


class DemoDataParams(Params):
    """The synthetic BUSI-like dataset: size, file formats and appearance ranges."""

    seed: NonNegativeInt
    images_per_class: PositiveInt
    #: Side of the square images, in pixels.
    image_size: Annotated[int, Field(ge=32, le=2048)]
    #: Fraction of images per format, summing to 1.
    format_mix: Annotated[dict[ImageFormat, NonNegativeFloat], Field(min_length=1)]
    jpeg_quality: Annotated[int, Field(ge=1, le=95)]
    #: All-zero masks beside normal images, as in BUSI.
    normal_masks: StrictBool
    lesion_radius: _range(0.02, 0.3)
    lesion_contrast: _range(0.0, 1.0)
    benign_edge_px: _range(0.1, 20.0)
    malignant_edge_px: _range(0.1, 20.0)
    spicules: _range(0, 64, int)
    dynamic_range_db: _range(10.0, 100.0)
    gain_db: _range(-40.0, 40.0)
    gamma: _range(0.2, 5.0)
    speckle_px: NonNegativeFloat

    @field_validator("format_mix")
    @classmethod
    def _sums_to_one(cls, mix: dict[str, float]) -> dict[str, float]:
        if not math.isclose(sum(mix.values()), 1.0, abs_tol=1e-6):
            raise ValueError(f"the fractions must sum to 1, got {sum(mix.values()):g}")
        return mix


SCHEMA = DemoDataParams
