"""The ``demo_data`` parameters (defaults: ``conf/base/parameters_demo_data.yml``).

The model is also the typed configuration the generator reads (``cfg.spicules`` is a
``(min, max)`` tuple of ints, ``cfg.difficulty.lesion_radius`` of floats).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    StrictBool,
    ValidationError,
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
    """A ``kind: ultrasound`` entry of ``presets``: how hard the images and their labels are."""

    kind: Literal["ultrasound"]
    #: Equivalent radius of a mass (and area of a normal image's ducts), fraction of image_size.
    lesion_radius: _range(0.02, 0.3)
    #: Echo inside a mass or duct relative to the tissue around it (1: invisible).
    lesion_contrast: _range(0.0, 1.0)
    #: Fraction of breasts (both views) filed under another class than the one drawn.
    label_noise: Annotated[float, Field(ge=0.0, le=0.5)]
    #: Strength of the external site's shift: 0 the same acquisition, 1 ``external_site`` as
    #: written, 2 twice as far.
    site_shift: Annotated[float, Field(ge=0.0, le=4.0)]


#: ``[height, width]`` of a large-image preset, in pixels.
_Shape = tuple[Annotated[int, Field(ge=32, le=4096)], Annotated[int, Field(ge=32, le=4096)]]

#: An optical-density colour of one stain (red, green, blue), as in Ruifrok and Johnston 2001.
_StainVector = tuple[
    Annotated[float, Field(ge=0.0, le=2.0)],
    Annotated[float, Field(ge=0.0, le=2.0)],
    Annotated[float, Field(ge=0.0, le=2.0)],
]


class MicrocalcParams(Params):
    """A ``kind: microcalc`` entry of ``presets``: large grayscale mammogram-like images.

    The malignant signal is a cluster of specks a few pixels wide; a benign image carries the
    same total brightness spread as a diffuse blob, so that an image resized to the model's
    size cannot tell them apart and a tile at full resolution can.
    """

    kind: Literal["microcalc"]
    #: ``[height, width]`` of every image.
    image_size: _Shape
    #: Side of one speck, in pixels.
    speck_px: _range(1, 16, int)
    #: Specks in a malignant cluster.
    specks: _range(1, 64, int)
    #: Radius of a cluster (and of a benign blob's spread, twice its sigma), in pixels.
    cluster_radius_px: _range(2.0, 256.0)
    #: Brightness a speck adds above the tissue, as a fraction of the full range.
    speck_contrast: _range(0.0, 1.0)
    #: Standard deviation of the tissue's density texture (fraction of the full range).
    texture: Annotated[float, Field(ge=0.0, le=1.0)]
    #: Standard deviation of the pixel noise (quantum mottle; fraction of the full range).
    noise: Annotated[float, Field(ge=0.0, le=1.0)]
    #: Display gamma of the external site at ``site_shift: 1`` (1: the same display).
    external_gamma: Annotated[float, Field(ge=0.2, le=5.0)]
    label_noise: Annotated[float, Field(ge=0.0, le=0.5)]
    site_shift: Annotated[float, Field(ge=0.0, le=4.0)]


class HistologyParams(Params):
    """A ``kind: histology`` entry of ``presets``: large RGB H&E-like microscopy fields.

    Pink stroma, purple nuclei and white lumina, drawn as amounts of haematoxylin and eosin
    and coloured by each site's stain vectors (Beer-Lambert). The class signal is a cluster of
    nuclei: small and regular in a benign image, fewer, enlarged, darker and irregular in a
    malignant one, with the same total stain, so that a resized image barely tells them apart.
    """

    kind: Literal["histology"]
    #: ``[height, width]`` of every field.
    image_size: _Shape
    #: Radius of a normal or benign nucleus, in pixels.
    nucleus_radius_px: _range(1.0, 32.0)
    #: Radius of a malignant nucleus, in pixels.
    malignant_nucleus_radius_px: _range(1.0, 64.0)
    #: Nuclei scattered in the tissue, per 10,000 px of tissue.
    nuclei_per_10k_px: Annotated[float, Field(ge=0.0, le=200.0)]
    #: Radius of the lesion's cluster of nuclei, in pixels.
    cluster_radius_px: _range(4.0, 1024.0)
    #: Nuclei in a benign cluster (a malignant one has as much stain in fewer, larger nuclei).
    cluster_nuclei: _range(1, 1000, int)
    #: The first site's haematoxylin and eosin colours.
    hematoxylin: _StainVector
    eosin: _StainVector
    #: The external site's colours at ``site_shift: 1`` (interpolated for other shifts).
    external_hematoxylin: _StainVector
    external_eosin: _StainVector
    #: Each image's amount of each stain is scaled by a factor drawn in ``[1 - v, 1 + v]``.
    stain_variation: Annotated[float, Field(ge=0.0, le=0.9)]
    label_noise: Annotated[float, Field(ge=0.0, le=0.5)]
    site_shift: Annotated[float, Field(ge=0.0, le=4.0)]


#: The models of ``presets`` entries, by ``kind``.
PRESET_KINDS: dict[str, type[Params]] = {
    "ultrasound": DifficultyParams,
    "microcalc": MicrocalcParams,
    "histology": HistologyParams,
}
Preset = DifficultyParams | MicrocalcParams | HistologyParams


def _by_kind(presets: object) -> object:
    """Validate each entry of ``presets`` with the model its ``kind`` names.

    Errors keep their place (``presets.<name>.<field>``), as a plain nested model's would.
    """
    if not isinstance(presets, dict):
        return presets
    validated: dict[str, object] = {}
    errors: list[dict] = []
    for name, entry in presets.items():
        kind = entry.get("kind") if isinstance(entry, dict) else getattr(entry, "kind", None)
        if kind is None and isinstance(entry, dict):
            errors.append({"type": "missing", "loc": (name, "kind"), "input": entry})
            continue
        if kind not in PRESET_KINDS:
            message = f"not one of {', '.join(PRESET_KINDS)}"
            errors.append(_value_error((name, "kind"), kind, message))
            continue
        try:
            validated[name] = PRESET_KINDS[kind].model_validate(entry)
        except ValidationError as exc:
            errors.extend({**e, "loc": (name, *e["loc"])} for e in exc.errors())
    if errors:
        raise ValidationError.from_exception_data("presets", errors)
    return validated


def _value_error(loc: tuple, value: object, message: str) -> dict:
    return {"type": "value_error", "loc": loc, "input": value, "ctx": {"error": message}}


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
    #: Named presets (``standard``, ``hard``, ``microcalc``, ...), each of a ``kind``.
    presets: Annotated[dict[str, Preset], Field(min_length=1), BeforeValidator(_by_kind)]
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
    def difficulty(self) -> Preset:
        """The selected preset's values."""
        return self.presets[self.preset]


SCHEMA = DemoDataParams
