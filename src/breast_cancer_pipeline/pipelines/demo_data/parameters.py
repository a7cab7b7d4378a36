"""The ``demo_data`` parameters (defaults: ``conf/base/parameters_demo_data.yml``).

The model is also the typed configuration the generator reads (``cfg.spicules`` is a
``(min, max)`` tuple of ints, ``cfg.difficulty.lesion_radius`` of floats).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    StrictBool,
    ValidationInfo,
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


class DifficultyParams(Params):
    """One entry of ``presets``: how hard the images and their labels are."""

    #: Equivalent radius of a mass (and area of a normal image's ducts), fraction of image_size.
    lesion_radius: _range(0.02, 0.3)
    #: Echo inside a mass or duct relative to the tissue around it (1: invisible).
    lesion_contrast: _range(0.0, 1.0)
    #: Fraction of breasts (both views) filed under another class than the one drawn.
    label_noise: Annotated[float, Field(ge=0.0, le=0.5)]
    #: Strength of the external site's shift: 0 the same acquisition, 1 ``external_site`` as
    #: written, 2 twice as far.
    site_shift: Annotated[float, Field(ge=0.0, le=4.0)]


class ExternalSiteParams(Params):
    """A second synthetic site (another scanner): same classes, own patients, shifted look.

    Each shift is written at ``site_shift: 1`` and scaled by the preset's ``site_shift``.
    """

    #: Patients with a benign (and as many with a malignant) breast; 0 and 0: no external site.
    lesion_patients_per_class: NonNegativeInt
    #: Patients with two normal breasts.
    normal_patients: NonNegativeInt
    #: Added to both ends of ``gain_db``.
    gain_db: Annotated[float, Field(ge=-40.0, le=40.0)]
    #: ``speckle_px`` is multiplied by it (coarser grain above 1).
    speckle_scale: PositiveFloat
    #: Images are drawn at this fraction of ``image_size`` in each direction and resampled back.
    resolution: Annotated[float, Field(gt=0.0, le=1.0)]
    #: Added to both ends of the preset's ``lesion_contrast`` (clipped to [0, 1]).
    lesion_contrast_shift: Annotated[float, Field(ge=-1.0, le=1.0)]


class DemoDataParams(Params):
    """The synthetic BUSI-like dataset: patients, file formats and appearance ranges."""

    seed: NonNegativeInt
    #: Patients with one benign breast, and as many with one malignant breast (4 images each).
    lesion_patients_per_class: PositiveInt
    #: Patients with two normal breasts (4 images each).
    normal_patients: NonNegativeInt
    #: Share of affected breasts whose lesion shows in both views (else in one).
    lesion_both_views: Annotated[float, Field(ge=0.0, le=1.0)]
    #: Side of the square images, in pixels.
    image_size: Annotated[int, Field(ge=32, le=2048)]
    #: Fraction of images per format, summing to 1.
    format_mix: Annotated[dict[ImageFormat, NonNegativeFloat], Field(min_length=1)]
    jpeg_quality: Annotated[int, Field(ge=1, le=95)]
    #: All-zero masks beside normal images, as in BUSI.
    normal_masks: StrictBool
    #: Named difficulties (``standard``, ``hard``, ...).
    presets: Annotated[dict[str, DifficultyParams], Field(min_length=1)]
    #: The entry of ``presets`` that sets the difficulty.
    preset: str
    external_site: ExternalSiteParams
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

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str, info: ValidationInfo) -> str:
        presets = info.data.get("presets")
        if presets is not None and preset not in presets:
            raise ValueError(
                f"not one of demo_data.presets ({', '.join(sorted(presets))}); e.g. "
                "--params demo_data.preset=hard, or add a preset to demo_data.presets"
            )
        return preset

    @property
    def difficulty(self) -> DifficultyParams:
        """The selected preset's values."""
        return self.presets[self.preset]


SCHEMA = DemoDataParams
