"""The ``inference`` parameters (defaults: ``conf/base/parameters_inference.yml``)."""

from __future__ import annotations

from pydantic import PositiveInt, field_validator

from breast_cancer_pipeline.param_schema import Params


class InferenceParams(Params):
    """Scoring a folder of new images (or a served request) with the packaged model."""

    #: Folder of images to score.
    source_dir: str
    #: Images decoded and run through the model at once (bounds memory).
    batch_size: PositiveInt
    #: Decompression-bomb guard: an image with more pixels is a row error; null: no limit.
    max_pixels: PositiveInt | None
    #: Percentiles mapped to 0 and 255 when a high-bit-depth image is reduced to 8 bits.
    window_percentiles: tuple[float, float]

    @field_validator("window_percentiles")
    @classmethod
    def _window(cls, window: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= window[0] < window[1] <= 100:
            raise ValueError("must be [low, high] with 0 <= low < high <= 100, e.g. [0.5, 99.5]")
        return window


SCHEMA = InferenceParams
