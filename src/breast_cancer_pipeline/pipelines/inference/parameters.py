"""The ``inference`` parameters (defaults: ``conf/base/parameters_inference.yml``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from breast_cancer_pipeline.param_schema import Params


class Conformal(Params):
    """The conformal prediction sets of the served model (calibrated by reporting)."""

    #: Miscoverage: a set misses the true class for at most this share of images.
    alpha: Annotated[float, Field(gt=0.0, lt=1.0)]


class OodSettings(Params):
    """The out-of-distribution check of the served model (fitted by the reporting pipeline)."""

    #: Share of validation images accepted as in-distribution: sets the score's threshold.
    accept_rate: Annotated[float, Field(gt=0.0, le=1.0)]
    #: ``flag``: answer and mark the row; ``reject``: a row error instead of probabilities.
    action: Literal["flag", "reject"]


class ServingLimits(Params):
    """What one request to the served model may carry, what it may cost, what runs it."""

    #: Images one request may hold; more is an HTTP 413 before any is decoded.
    max_images: PositiveInt
    #: Largest image file in a request, in bytes (base64-decoded); larger is a row error.
    max_image_bytes: PositiveInt
    #: Largest request body, in bytes; larger is an HTTP 413.
    max_request_bytes: PositiveInt
    #: Memory (MiB) the decodes of the server process may hold together, over all requests.
    decode_memory_mb: PositiveInt
    #: A lane of its own (MiB) for the decodes that fit in it; 0: none.
    small_decode_mb: NonNegativeInt
    #: Seconds a request's image may take to decode before its row gets an error.
    decode_seconds: PositiveFloat
    #: Host names the server answers to; empty: the bind address and the loopback names.
    allowed_hosts: list[str]
    conformal: Conformal
    ood: OodSettings
    #: What runs the forward pass: the Keras model, or model.onnx on ONNX Runtime.
    runtime: Literal["tensorflow", "onnxruntime"]
    #: Long side (px) of the thumbnail a tile model's ``explain`` answer is drawn on.
    thumbnail_side: PositiveInt

    @model_validator(mode="after")
    def _one_image_fits(self) -> ServingLimits:
        base64_size = -(-self.max_image_bytes // 3) * 4
        if base64_size > self.max_request_bytes:
            raise ValueError(
                f"max_image_bytes = {self.max_image_bytes:,} is {base64_size:,} bytes once "
                f"base64-encoded, more than max_request_bytes = {self.max_request_bytes:,}: "
                "raise max_request_bytes or lower max_image_bytes"
            )
        return self


class ExportSettings(Params):
    """The served network exported beside the packaged model, each checked against Keras."""

    #: Export ``model.onnx`` (tf2onnx), what ``runtime: onnxruntime`` serves.
    onnx: bool
    #: Export ``model.tflite`` (LiteRT, builtin operators only).
    litert: bool
    #: The ONNX opset the graph is written for.
    opset: Annotated[int, Field(ge=13)]
    #: Largest absolute difference of the probabilities from Keras's on the test split; a
    #: file over it is not shipped.
    tolerance: PositiveFloat
    #: The odd batch size the parity check runs at, besides 1.
    parity_batch_size: Annotated[int, Field(ge=3)]

    @field_validator("parity_batch_size")
    @classmethod
    def _odd(cls, size: int) -> int:
        if size % 2 == 0:
            raise ValueError(f"must be odd (a batch size unlike any power of two), got {size}")
        return size


class InferenceParams(Params):
    """Scoring a folder of new images (or a served request) with the packaged model."""

    #: Folder of images to score.
    source_dir: str
    #: Images decoded and run through the model at once (bounds memory).
    batch_size: PositiveInt
    #: An image whose header gives more pixels is a row error, before decoding; null: no limit.
    max_pixels: PositiveInt | None
    #: Memory (bytes) one image's decode may hold, from its header; more is a row error.
    max_decoded_bytes: PositiveInt | None
    #: Percentiles mapped to 0 and 255 when a high-bit-depth image is reduced to 8 bits.
    window_percentiles: tuple[float, float]
    #: Limits of the served model (requests), not of the batch command (files).
    serving: ServingLimits
    #: The exported files of the packaged model (written by the reporting pipeline).
    export: ExportSettings

    @field_validator("window_percentiles")
    @classmethod
    def _window(cls, window: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= window[0] < window[1] <= 100:
            raise ValueError("must be [low, high] with 0 <= low < high <= 100, e.g. [0.5, 99.5]")
        return window

    @model_validator(mode="after")
    def _one_decode_fits_the_budget(self) -> InferenceParams:
        budget = self.serving.decode_memory_mb * 2**20
        if self.max_decoded_bytes is not None and self.max_decoded_bytes > budget:
            raise ValueError(
                f"max_decoded_bytes = {self.max_decoded_bytes} is more than "
                f"serving.decode_memory_mb = {self.serving.decode_memory_mb} MiB "
                f"({budget:,} bytes) can hold: images under the first would be refused by the "
                "second. Lower max_decoded_bytes or raise serving.decode_memory_mb"
            )
        return self


SCHEMA = InferenceParams
