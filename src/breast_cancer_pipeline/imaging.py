"""Decode, resize, encode and fingerprint breast images: the one place that knows image formats.

Ingestion (source file -> PNG), training and serving (uploaded bytes -> array) all call
:func:`decode_image` and :func:`resize_image`, so an image is turned into pixels the same way
everywhere. This module deliberately imports only numpy and Pillow, and pydicom when it first
reads a DICOM file (never TensorFlow), so the data stages, the server and ``kedro registry
list`` start quickly.

Decoding rules, in the order they are applied:

* The content is sniffed, not the file name: bytes with the DICOM magic ``DICM`` at offset 128
  are read by pydicom; otherwise Pillow tries PNG, JPEG (and MPO), BMP, GIF and TIFF; if Pillow
  does not recognise the bytes and the name ends in ``.dcm``/``.dicom`` or has no extension,
  pydicom force-reads them (DICOM files without the 128-byte preamble).
* The pixel count (width x height, from the header) is compared with ``max_pixels`` before any
  pixel is decoded.
* The memory the decode will hold (:func:`decode_cost`: the parsed file, the decoded pixels at
  their stored depth, the working copies and the 8-bit result) is computed from the header too
  and compared with ``max_decoded_bytes``; the data set of a deflated DICOM (transfer syntax
  1.2.840.10008.1.2.1.99) is inflated a chunk at a time to measure it, stopping as soon as it
  passes the limit. With a :class:`~breast_cancer_pipeline.decode_budget.DecodeBudget`, that
  cost is reserved from a budget shared by the decodes of the process before decoding.
* Pillow images: the EXIF orientation is applied; 1-bit, palette, CMYK, YCbCr and LAB images
  are converted to L or RGB; an alpha channel is composited on black (a transparent pixel
  becomes black, like the background of a mammogram); 16-bit and 32-bit integer and float
  images (modes ``I;16``, ``I;16B``, ``I``, ``F``) are mapped to 8 bits by the percentile
  window described below. PNG and TIFF files with 16 bits per colour sample are refused,
  because Pillow can only read them by dropping the low byte.
* DICOM: the modality LUT (Rescale Slope/Intercept) is applied, then the file's own VOI LUT or
  window (Window Center/Width) when it has a valid one, else the percentile window; MONOCHROME1 is
  inverted so that a high output value always means bright. Compressed transfer syntaxes
  (RLE, JPEG, JPEG-LS, JPEG 2000) are decoded by the installed pydicom/pylibjpeg handlers.

Percentile window (images with more than 8 bits and no window of their own): the pixels that
hold the image's darkest value are taken as background and left out, then the
``window_percentiles`` of the remaining pixels are mapped linearly to 0 and 255, with clipping
outside. The flat, zero-valued surroundings of a scanned mammogram cover most of the image;
with percentiles taken over the whole image, the high percentile would fall inside the breast
and saturate part of it. When no flat background exists, the rule is the plain percentile
window. The mapping is monotonic; 8-bit data (PNG, JPEG, 8-bit DICOM without a window) is kept
as it is.

Memory: pixels are converted a strip of rows at a time into the 8-bit result, in the smallest
type that holds each step. Integer images (up to 2**20 distinct values) are windowed from
their histogram: the modality LUT, the file's window and the percentile window are computed
once per stored value and applied as a lookup table, so no full-size copy in a wider type is
ever made. Float images, and integer images spanning more values, are windowed on one copy.

Pages: a multi-page TIFF, an animated GIF or PNG and a multi-frame DICOM hold several images;
:func:`decode_image` returns one (``page``, the first by default), :func:`decode_pages` the
first or all of them together with the number the file holds. The frames of an MPO (a camera
JPEG with an embedded preview) count as one page.

Color modes: ``grayscale`` returns ``(H, W, 1)`` using ITU-R 601-2 luma (Pillow mode ``L``);
``rgb`` returns ``(H, W, 3)`` with grayscale sources replicated to the three channels.
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import (  # the plugins are imported to register exactly the formats we open
    BmpImagePlugin,  # noqa: F401
    GifImagePlugin,  # noqa: F401
    Image,
    ImageFile,
    JpegImagePlugin,  # noqa: F401
    PngImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
    UnidentifiedImageError,
)

if TYPE_CHECKING:
    import pydicom

    from breast_cancer_pipeline.decode_budget import DecodeBudget

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".dcm", ".dicom"}
)
"""File extensions (lower case, with the dot) that ingestion treats as images."""

COLOR_MODES: tuple[str, ...] = ("grayscale", "rgb")
"""Valid values of the ``color_mode`` argument (parameter ``ingestion.color_mode``)."""

#: Settings :func:`decode_image` uses when a caller gives none (e.g. re-reading ingestion's own
#: 8-bit PNGs). Ingestion passes ``ingestion.max_pixels``, ``ingestion.max_decoded_bytes`` and
#: ``ingestion.window_percentiles``, serving its own, lower limits (``inference.max_pixels``,
#: ``inference.max_decoded_bytes``); a test keeps these equal to ``conf/base``.
DEFAULT_MAX_PIXELS = 178_956_970
"""Pixel limit when none is given: twice Pillow's ``MAX_IMAGE_PIXELS``, where Pillow refuses."""

DEFAULT_MAX_DECODED_BYTES = 2 * 2**30
"""Memory limit of one decode when none is given (``ingestion.max_decoded_bytes``)."""

DEFAULT_WINDOW_PERCENTILES = (0.5, 99.5)
"""Percentile window when none is given (``ingestion.window_percentiles`` in ``conf/base``)."""

MULTIPAGE_MODES: tuple[str, ...] = ("first", "all")
"""Valid values of :func:`decode_pages`' ``pages`` argument."""

_DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
_PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF")  # JPEG also opens MPO (camera) files
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_RGB_MODES = frozenset({"CMYK", "YCbCr", "LAB", "HSV", "RGBX"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # (Float/DoubleFloat)PixelData
_PIXEL_DATA = 0x7FE00010
#: The pixel data tags as a little-endian data set stores them (group, then element).
_PIXEL_TAG_BYTES = tuple(
    (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little") for tag in _PIXEL_TAGS
)
#: Bits a pixel takes once decoded, by Pillow mode (as stored, before any conversion).
_MODE_BITS = {
    "1": 1,
    "L": 8,
    "P": 8,
    "LA": 16,
    "La": 16,
    "PA": 16,
    "RGB": 24,
    "YCbCr": 24,
    "LAB": 24,
    "HSV": 24,
    "I;16": 16,
    "I;16L": 16,
    "I;16B": 16,
    "I;16N": 16,
}
_FIX_EXCLUDE = "Re-export the file or exclude it with ingestion.exclude"

# Memory. Pixels are converted _STRIP_PIXELS at a time; the factors are bytes per pixel.
_STRIP_PIXELS = 1 << 18
_STRIP_COPIES = 64  # a strip's crop, conversion, composite and lookups
_TABLES = 8 * 2**20  # lookup tables, histograms and the decoders' own buffers
_MAX_LEVELS = 1 << 20  # integer images spanning more values are windowed on a copy
_COPY_WINDOW = 10  # windowing a float image on a copy: values, mask, foreground, result
_DICOM_WIDE = 40  # 32-bit or float DICOM: modality, window and percentile on copies
_DICOM_COLOUR = 7  # palette or YBR colour: the RGB pixels and their 16-bit LUT output
_RLE_DECODER, _CODEC_DECODER = 4, 12  # per sample: the RLE and the JPEG/JPEG 2000 decoders
_INFLATED_COPIES = 2.25  # a deflated data set: the inflated buffer, its elements, zlib's slack
_DEFLATE_HEAD = 8 * 2**20  # a deflated DICOM's elements before its pixel data, at most
_INFLATE_IN, _INFLATE_OUT = 1 << 16, 1 << 20


class ImageDecodeError(ValueError):
    """An image file cannot be decoded; the message says what is wrong and how to fix it.

    Attributes:
        name: The file name given to :func:`decode_image` (may be empty).
        reason: A short, stable description such as ``"empty file"`` or
            ``"file is truncated"``, suitable for counting failures in a report.
        detail: The underlying library message, if any.
        fix: What the user can do about it.
    """

    def __init__(self, name: str, reason: str, detail: str = "", fix: str = _FIX_EXCLUDE):
        self.name = name
        self.reason = reason
        self.detail = detail
        self.fix = fix
        super().__init__(f"{self.problem}. {fix}")

    @property
    def problem(self) -> str:
        """What is wrong, without the fix: each caller (ingestion, serving) adds its own."""
        what = f"cannot decode {self.name!r}" if self.name else "cannot decode the image"
        extra = f" ({self.detail})" if self.detail else ""
        return f"{what}: {self.reason}{extra}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the exception picklable (Kedro's ParallelRunner sends errors across processes).
        return (type(self), (self.name, self.reason, self.detail, self.fix))


class ImageTooLargeError(ImageDecodeError):
    """The header gives more pixels than ``max_pixels``: refused before any pixel is decoded.

    Attributes:
        width: Width from the header, in pixels.
        height: Height from the header, in pixels.
        max_pixels: The limit it exceeds.
    """

    def __init__(self, name: str, width: int, height: int, max_pixels: int):
        self.width, self.height, self.max_pixels = width, height, max_pixels
        super().__init__(
            name,
            "decompression bomb",
            f"{width} x {height} = {width * height:,} pixels is more than "
            f"max_pixels = {max_pixels:,}",
            "If the image is genuine, raise max_pixels (ingestion.max_pixels); otherwise "
            "exclude it with ingestion.exclude",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.width, self.height, self.max_pixels))


class ImageTooCostlyError(ImageDecodeError):
    """Decoding would hold more memory than allowed: refused before any pixel is decoded.

    Attributes:
        cost: What the decode would hold at its peak, in bytes (for a deflated DICOM refused
            while it was being measured: what it would hold at least).
        limit: The limit it exceeds, in bytes.
        limit_name: ``max_decoded_bytes``, or the parameter of a shared
            :class:`~breast_cancer_pipeline.decode_budget.DecodeBudget`.
        what: What is decoded (size, mode), for the message.
    """

    def __init__(
        self,
        name: str,
        cost: int,
        limit: int,
        limit_name: str = "max_decoded_bytes",
        what: str = "",
    ):
        self.cost, self.limit, self.limit_name, self.what = cost, limit, limit_name, what
        fix = f"If the image is genuine, raise {limit_name}"
        if limit_name == "max_decoded_bytes":
            fix += " (ingestion.max_decoded_bytes); otherwise exclude it with ingestion.exclude"
        super().__init__(
            name,
            "decompression bomb",
            f"decoding {what or 'it'} needs {cost:,} bytes of memory, more than "
            f"{limit_name} allows ({limit:,} bytes)",
            fix,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.cost, self.limit, self.limit_name, self.what))


@dataclass(frozen=True)
class DecodeCost:
    """The memory a decode holds, known from the file's header before any pixel is decoded.

    Attributes:
        pixel_bytes: The decoded pixels at the depth the file stores them: width x height x
            pages decoded x samples per pixel x bytes per sample.
        peak_bytes: What the decode holds at its peak: the parsed file (a deflated DICOM's
            inflated data set), the decoded pixels, the working copies and the 8-bit result.
        what: The size and pixel format, for messages (e.g. ``"6300 x 6300 px RGBA"``).
    """

    pixel_bytes: int
    peak_bytes: int
    what: str


def is_image_name(name: str) -> bool:
    r"""Tell whether a file name has one of the :data:`IMAGE_EXTENSIONS`.

    Files without an extension and hidden files (name starting with ``.``, such as the
    ``._x.png`` resource forks macOS leaves in archives) are not images.

    Args:
        name: A file name or path, with ``/`` or ``\`` separators.

    Returns:
        True when the extension (case-insensitive) is an image extension.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if base.startswith("."):
        return False
    return os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def decode_image(
    data: bytes,
    name: str = "",
    *,
    color_mode: str = "grayscale",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    page: int = 0,
    window_percentiles: tuple[float, float] = DEFAULT_WINDOW_PERCENTILES,
    max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES,
    budget: DecodeBudget | None = None,
) -> np.ndarray:
    """Decode the bytes of a PNG, JPEG, BMP, GIF, TIFF or DICOM file to an 8-bit array.

    See the module docstring for the decoding rules.

    Args:
        data: The whole file content.
        name: File name, used in error messages and as a hint: only names ending in
            ``.dcm``/``.dicom`` or without an extension are force-read as DICOM when the content
            has no DICOM magic and Pillow does not recognise it.
        color_mode: ``"grayscale"`` for an ``(H, W, 1)`` result or ``"rgb"`` for ``(H, W, 3)``.
        max_pixels: Refuse images whose width x height exceeds this (decompression bombs);
            ``None`` disables this check (Pillow still refuses more than twice
            ``PIL.Image.MAX_IMAGE_PIXELS``).
        page: Page of a multi-page TIFF, frame of a GIF or multi-frame DICOM; 0 is the first.
        window_percentiles: Percentiles of the non-background pixels mapped to 0 and 255 when
            a high-bit-depth image has to be reduced to 8 bits and has no window of its own.
        max_decoded_bytes: Refuse images whose decode would hold more memory than this
            (:func:`decode_cost`), before decoding; ``None`` disables this check.
        budget: A budget shared with other threads: the decode waits until its cost is free
            in it, and holds it while decoding. ``None``: decode at once.

    Returns:
        A new, writable ``uint8`` array of shape ``(H, W, 1)`` or ``(H, W, 3)``.

    Raises:
        ValueError: An argument is invalid (not an :class:`ImageDecodeError`).
        ImageDecodeError: The file is empty, truncated, corrupt, not an image, too large, has
            no pixel data, has fewer pages than ``page`` or uses an unsupported pixel format.
        ImageTooCostlyError: Decoding would need more than ``max_decoded_bytes`` or the whole
            ``budget``.
    """
    _check_page_argument(page)
    settings = _Settings(
        name, color_mode, max_pixels, window_percentiles, max_decoded_bytes, budget
    )
    return _decode(data, settings, page)[0][0]


def decode_pages(
    data: bytes,
    name: str,
    *,
    color_mode: str,
    max_pixels: int | None,
    window_percentiles: tuple[float, float],
    pages: str,
    max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES,
    budget: DecodeBudget | None = None,
) -> tuple[list[np.ndarray], int]:
    """Decode the first or every page/frame of an image file, and count its pages.

    Same rules and arguments as :func:`decode_image`; every page is decoded on its own (its
    own percentile window). With ``"all"``, the pages decoded before count against
    ``max_decoded_bytes`` too.

    Args:
        data: The whole file content.
        name: File name (messages, DICOM hint).
        color_mode: ``"grayscale"`` or ``"rgb"``.
        max_pixels: Pixel limit per page, or ``None``.
        window_percentiles: The percentile window for high-bit-depth pages.
        pages: ``"first"`` (decode page 0) or ``"all"``.
        max_decoded_bytes: Memory limit of the decode, or ``None``.
        budget: A budget shared with other threads, or ``None``.

    Returns:
        ``(arrays, n_pages)``: the decoded pages (one for ``"first"``) and how many pages the
        file holds.

    Raises:
        ValueError: An argument is invalid.
        ImageDecodeError: As :func:`decode_image`.
    """
    if pages not in MULTIPAGE_MODES:
        raise ValueError(f"pages must be one of {MULTIPAGE_MODES}, got {pages!r}")
    settings = _Settings(
        name, color_mode, max_pixels, window_percentiles, max_decoded_bytes, budget, False, True
    )
    return _decode(data, settings, 0 if pages == "first" else None)


def decode_cost(
    data: bytes, name: str = "", *, color_mode: str = "grayscale", page: int = 0
) -> DecodeCost:
    """What decoding one page of a file would hold in memory, read from its header alone.

    The figure :func:`decode_image` compares with ``max_decoded_bytes`` and reserves from a
    budget. No pixel is decoded; a deflated DICOM is inflated a chunk at a time to measure it.

    Args:
        data: The whole file content.
        name: File name (messages, DICOM hint).
        color_mode: ``"grayscale"`` or ``"rgb"``.
        page: The page or frame that would be decoded.

    Returns:
        The pixels' size as stored and the decode's peak, in bytes.

    Raises:
        ValueError: An argument is invalid.
        ImageDecodeError: The header cannot be read, or has no such page.
    """
    _check_page_argument(page)
    settings = _Settings(name, color_mode, None, DEFAULT_WINDOW_PERCENTILES, None, None, True)
    try:
        _decode(data, settings, page)
    except _CostKnown as known:
        return known.cost
    raise AssertionError("every decode path reports its cost before decoding")


def encode_png(array: np.ndarray, *, compress_level: int = 6) -> bytes:
    """Encode an 8-bit image as lossless PNG.

    The output depends only on the pixels and ``compress_level`` (no time stamps), so the same
    image always gives the same bytes.

    Args:
        array: ``uint8`` array of shape ``(H, W, 1)`` or ``(H, W, 3)``.
        compress_level: zlib level 0-9. For a 4,600 x 2,900 mammogram, 6 (Pillow's default)
            takes about 1 s and 2.6 MB, 1 about 0.5 s and 3.3 MB.

    Returns:
        The PNG file content.

    Raises:
        ValueError: The array is not ``uint8`` ``(H, W, 1)``/``(H, W, 3)``.
    """
    buffer = io.BytesIO()
    _to_pillow(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def resize_image(array: np.ndarray, size: tuple[int, int] | int) -> np.ndarray:
    """Resize an 8-bit image with Pillow's bilinear filter, the one training and serving share.

    When shrinking, Pillow widens the bilinear kernel to the scale factor, so every source
    pixel contributes (area-like, no aliasing), unlike a plain 4-tap bilinear interpolation.

    Args:
        array: ``uint8`` array of shape ``(H, W, 1)`` or ``(H, W, 3)``.
        size: Target ``(height, width)`` (numpy/Keras order, not Pillow's ``(width, height)``),
            or one int for a square.

    Returns:
        A new ``uint8`` array of shape ``(height, width, C)`` with the input's channel count.

    Raises:
        ValueError: The array or the size is invalid.
    """
    dims = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(dims) != 2 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in dims
    ):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    height, width = int(dims[0]), int(dims[1])
    image = _to_pillow(array)
    if image.size == (width, height):
        return array.copy()
    resized = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    return resized.reshape(height, width, array.shape[2]).copy()


def pixel_sha256(array: np.ndarray) -> str:
    """Fingerprint decoded pixels: equal for the same image stored in different formats.

    Args:
        array: Any numpy array; its shape and dtype are part of the hash.

    Returns:
        The hexadecimal SHA-256 of ``"<dtype>:<shape>:"`` followed by the C-ordered pixel bytes.
    """
    digest = hashlib.sha256(f"{array.dtype.str}:{tuple(array.shape)}:".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Internals


class _NotPillowImage(Exception):
    """Pillow does not recognise the content (it may still be a preamble-less DICOM)."""


class _CostKnown(Exception):
    """Raised instead of decoding by :func:`decode_cost`, with the cost the header gives."""

    def __init__(self, cost: DecodeCost):
        super().__init__(cost.what)
        self.cost = cost


@dataclass(frozen=True)
class _Settings:
    """The decoding arguments, checked once: bad values are ``ValueError``, not bad files."""

    name: str
    color_mode: str
    max_pixels: int | None
    window: tuple[float, float]
    max_decoded_bytes: int | None = None
    budget: DecodeBudget | None = None
    estimate_only: bool = False
    #: Count the file's pages (``decode_pages``); a single page's decode does not need to.
    count_pages: bool = False

    def __post_init__(self) -> None:
        if self.color_mode not in COLOR_MODES:
            raise ValueError(
                f"color_mode (parameter ingestion.color_mode) must be one of "
                f"{', '.join(repr(m) for m in COLOR_MODES)}, got {self.color_mode!r}"
            )
        for key in ("max_pixels", "max_decoded_bytes"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be a positive int or None, got {value!r}")
        low, high = self.window
        if not 0 <= low < high <= 100:
            raise ValueError(
                "window_percentiles must be (low, high) with 0 <= low < high <= 100, "
                f"got {self.window!r}"
            )

    @property
    def channels(self) -> int:
        """Channels of the result: 1 (grayscale) or 3 (rgb)."""
        return 1 if self.color_mode == "grayscale" else 3

    def limit(self) -> tuple[int, str] | None:
        """The tighter memory limit of a decode and its name, or None without a limit."""
        budget = None if self.budget is None else self.budget.total_bytes
        if self.max_decoded_bytes is not None and (
            budget is None or self.max_decoded_bytes <= budget
        ):
            return self.max_decoded_bytes, "max_decoded_bytes"
        return None if budget is None else (budget, self.budget.parameter)

    def admit(self, cost: DecodeCost) -> AbstractContextManager[Any]:
        """Check the cost against the limit and reserve it from the budget (a ``with`` block).

        Raises:
            ImageTooCostlyError: The cost is over ``max_decoded_bytes`` or the whole budget.
        """
        if self.estimate_only:
            raise _CostKnown(cost)
        limit = self.max_decoded_bytes
        if limit is not None and cost.peak_bytes > limit:
            raise ImageTooCostlyError(self.name, cost.peak_bytes, limit, what=cost.what)
        if self.budget is None:
            return nullcontext()
        return self.budget.reserve(cost.peak_bytes, self.name)


def _check_page_argument(page: int) -> None:
    if not isinstance(page, int) or page < 0:
        raise ValueError(f"page must be an int >= 0, got {page!r}")


def _decode(data: bytes, settings: _Settings, page: int | None) -> tuple[list[np.ndarray], int]:
    """Pages ``[page]`` (or all, for ``None``) of a file, and its page count."""
    name = settings.name
    if not data:
        raise ImageDecodeError(
            name,
            "empty file",
            fix="Copy the file again from its source or exclude it with ingestion.exclude",
        )
    data = bytes(data)
    if data[128:132] == b"DICM":
        return _decode_dicom(data, settings, False, page)
    try:
        return _decode_pillow(data, settings, page)
    except _NotPillowImage:
        ext = os.path.splitext(name.replace("\\", "/").rsplit("/", 1)[-1])[1].lower()
        if ext in _DICOM_EXTENSIONS or not ext:
            return _decode_dicom(data, settings, True, page)
        raise _not_an_image(name) from None


def _not_an_image(name: str) -> ImageDecodeError:
    # The file's content is never quoted: messages end up in reports (rejected_files.csv).
    return ImageDecodeError(
        name,
        "not an image",
        "the content is not a PNG, JPEG, BMP, GIF, TIFF or DICOM image",
        "Check that the file really is an image (not e.g. an HTML error page saved under an "
        "image name), re-export it, or exclude it with ingestion.exclude",
    )


def _check_pixels(name: str, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(name, width, height, max_pixels)


def _check_page(name: str, page: int, n_pages: int) -> None:
    if page >= n_pages:
        raise ImageDecodeError(
            name,
            "page out of range",
            f"page={page} asked but the file has {n_pages} page(s)/frame(s)",
            f"Choose a page between 0 and {n_pages - 1}",
        )


@contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make Pillow raise on truncated files even if someone set LOAD_TRUNCATED_IMAGES."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = True


# --------------------------------------------------------------------------------------------
# Pillow


def _decode_pillow(
    data: bytes, settings: _Settings, page: int | None
) -> tuple[list[np.ndarray], int]:
    name = settings.name
    try:
        image = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS)
    except UnidentifiedImageError as exc:
        raise _NotPillowImage(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parser error is a bad file
        raise _pillow_error(name, exc) from None
    with image:
        _check_pixels(name, *image.size, settings.max_pixels)  # from the header: nothing decoded
        n_pages = _pillow_pages(image, settings, page)
        wanted = list(range(n_pages)) if page is None else [page]
        arrays: list[np.ndarray] = []
        for k in wanted:
            held = sum(a.nbytes for a in arrays)
            arrays.append(_pillow_page(image, settings, k, held, k == wanted[-1]))
    return arrays, n_pages


def _pillow_pages(image: Image.Image, settings: _Settings, page: int | None) -> int:
    """The file's page count, checked against ``page``; 1 when it need not be counted.

    Counting walks every page (a TIFF's chain of directories), so a single page's decode only
    checks that its page exists.
    """
    if page is not None and not settings.count_pages:
        if page:
            try:
                image.seek(page)
            except EOFError:
                raise ImageDecodeError(
                    settings.name,
                    "page out of range",
                    f"page={page} asked but the file has fewer pages/frames",
                    "Choose an earlier page",
                ) from None
            except Exception as exc:  # noqa: BLE001 - untrusted bytes: a bad file
                raise _pillow_error(settings.name, exc) from None
        return 1
    frames = getattr(image, "n_frames", 1)
    if page is not None:
        _check_page(settings.name, page, frames)
    return 1 if image.format == "MPO" else frames  # an MPO's second frame is a preview


def _pillow_page(
    image: Image.Image, settings: _Settings, page: int, held: int, last: bool
) -> np.ndarray:
    """Decode page ``page`` of an open Pillow image (``held``: bytes of the pages before).

    After the ``last`` page the image is closed, so that its pixels are freed within the
    memory reserved for the decode.
    """
    name = settings.name
    try:
        if page or image.tell():
            image.seek(page)
            _check_pixels(name, *image.size, settings.max_pixels)
        _refuse_16_bit_colour(image, name)
    except ImageDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any decoder error is a bad file
        raise _pillow_error(name, exc) from None
    with settings.admit(_pillow_cost(image, settings.channels, held)):
        orientation = _load(image, name)
        pixels = _pillow_pixels(image, settings, orientation)
        if last:
            image.close()
    return pixels


def _pillow_cost(image: Image.Image, channels: int, held: int) -> DecodeCost:
    """What decoding the current frame holds: Pillow's pixels, the windowing, the result."""
    width, height = image.size
    pixels, mode = width * height, image.mode
    stored = pixels * (2 if mode.startswith("I;16") else 1 if mode in ("1", "L", "P") else 4)
    window = pixels * _COPY_WINDOW if mode in ("I", "F") else 0
    peak = stored + _decoder_bytes(image) + window + pixels * channels + held + _working(pixels)
    as_stored = -(-pixels * _MODE_BITS.get(mode, 32) // 8)
    return DecodeCost(as_stored, peak, f"{width} x {height} px {mode}")


def _decoder_bytes(image: Image.Image) -> int:
    """What Pillow's decoder holds beside the image: coefficients, a compressed strip or tile."""
    width, height = image.size
    if image.format in ("JPEG", "MPO") and (
        image.info.get("progressive") or image.info.get("progression")
    ):
        return 2 * width * height * len(image.getbands())  # 16-bit DCT coefficients
    if image.format == "TIFF" and image.info.get("compression", "raw") != "raw":
        tags = image.tag_v2
        tile = (tags.get(322), tags.get(323))  # TileWidth, TileLength
        area = tile[0] * tile[1] if all(tile) else width * min(height, tags.get(278, height))
        return -(-area * _MODE_BITS.get(image.mode, 32) // 8)
    return 0


def _working(pixels: int) -> int:
    """Bytes of the copies made while converting ``pixels`` pixels a strip at a time."""
    return _TABLES + _STRIP_COPIES * min(pixels, _STRIP_PIXELS)


def _load(image: Image.Image, name: str) -> int:
    """Decode the current frame; its EXIF orientation (1: as stored)."""
    try:
        with _strict_truncation():
            image.load()
        return int(image.getexif().get(0x0112, 1))
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any decoder error is a bad file
        raise _pillow_error(name, exc) from None


def _pillow_error(name: str, exc: Exception) -> ImageDecodeError:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, Image.DecompressionBombError):
        fix = "Exclude the file with ingestion.exclude, or shrink it before ingestion"
        return ImageDecodeError(name, "decompression bomb", text, fix)
    truncated = "truncated" in text.lower() or isinstance(exc, EOFError)
    return ImageDecodeError(name, "file is truncated" if truncated else "file is corrupt", text)


def _refuse_16_bit_colour(image: Image.Image, name: str) -> None:
    if image.format not in ("PNG", "TIFF") or image.mode in _HIGH_DEPTH_MODES or not image.tile:
        return
    args = image.tile[0].args
    rawmode = args if isinstance(args, str) else (args[0] if args else "")
    if isinstance(rawmode, str) and ";16" in rawmode:
        raise ImageDecodeError(
            name,
            "unsupported 16-bit colour image",
            f"{image.format} with 16 bits per colour sample ({rawmode}); Pillow can only read it "
            "by dropping the low byte",
            "Convert it to 8-bit RGB or to 16-bit grayscale, or exclude it with ingestion.exclude",
        )


def _pillow_pixels(image: Image.Image, settings: _Settings, orientation: int) -> np.ndarray:
    """``(H, W, C)`` uint8 pixels of a loaded Pillow image, oriented, in the colour mode."""
    out, target = _oriented(image.height, image.width, settings.channels, orientation)
    if image.mode not in _HIGH_DEPTH_MODES:
        _fill(target, _pillow_rows(image, _base_mode(image, settings.name)))
        return out
    window = settings.window
    _fill(
        target,
        _pillow_rows(image, None),
        lambda levels, counts: _percentile_window(levels, window, counts),
        lambda values: _percentile_window(values, window),
    )
    return out


def _base_mode(image: Image.Image, name: str) -> str:
    """The mode strips are converted to: L, RGB, or LA/RGBA (composited on black)."""
    mode = image.mode
    if mode == "1":
        return "L"
    if mode == "P":
        return "RGBA" if "transparency" in image.info else "RGB"
    if mode in _RGB_MODES:
        return "RGB"
    if mode in _ALPHA_MODES:
        return "LA" if mode in ("LA", "La") else "RGBA"
    if mode in ("L", "RGB"):
        return mode
    raise ImageDecodeError(
        name,
        "unsupported pixel mode",
        f"Pillow mode {mode!r}",
        "Convert it to 8-bit grayscale or RGB, or exclude it with ingestion.exclude",
    )


def _pillow_rows(image: Image.Image, mode: str | None) -> _Rows:
    """The image a strip at a time, converted to ``mode`` (None: as stored, native order)."""
    width = image.width

    def read(top: int, bottom: int) -> np.ndarray:
        strip = image.crop((0, top, width, bottom))
        if mode is not None and strip.mode != mode:
            strip = strip.convert(mode)
        if mode in ("LA", "RGBA"):
            # On black: Pillow's premultiplied mode holds colour * alpha / 255, rounded.
            colour = np.asarray(strip.convert(mode[:-1] + "a"))[..., :-1]
            return colour[..., 0] if mode == "LA" else colour
        pixels = np.asarray(strip)
        if not pixels.dtype.isnative:
            pixels = pixels.astype(pixels.dtype.newbyteorder("="))
        return pixels

    return _Rows(image.height, width, read)


#: EXIF orientation -> (width and height swap, view of the displayed image in stored order).
_ORIENTATIONS: dict[int, tuple[bool, Callable[[np.ndarray], np.ndarray]]] = {
    2: (False, lambda a: a[:, ::-1]),
    3: (False, lambda a: a[::-1, ::-1]),
    4: (False, lambda a: a[::-1]),
    5: (True, lambda a: a.swapaxes(0, 1)),
    6: (True, lambda a: np.rot90(a, 1)),
    7: (True, lambda a: a.swapaxes(0, 1)[::-1, ::-1]),
    8: (True, lambda a: np.rot90(a, -1)),
}


def _oriented(height: int, width: int, channels: int, orientation: int) -> tuple[Any, Any]:
    """The result array as displayed, and a view of it in the stored order to write into."""
    swap, stored_view = _ORIENTATIONS.get(orientation, (False, None))
    shape = (width, height) if swap else (height, width)
    out = np.empty((*shape, channels), dtype=np.uint8)
    return out, (out if stored_view is None else stored_view(out))


# --------------------------------------------------------------------------------------------
# Strips and windows


@dataclass(frozen=True)
class _Rows:
    """An image read a strip of rows at a time: ``read(top, bottom)`` gives those rows."""

    height: int
    width: int
    read: Callable[[int, int], np.ndarray]
    array: np.ndarray | None = None  # the whole image, when it is in memory already

    @classmethod
    def of(cls, array: np.ndarray) -> _Rows:
        return cls(array.shape[0], array.shape[1], lambda top, bottom: array[top:bottom], array)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        step = max(1, _STRIP_PIXELS // max(1, self.width))
        for top in range(0, self.height, step):
            yield top, self.read(top, min(self.height, top + step))

    def whole(self) -> np.ndarray:
        """The whole image (assembled from strips when it is not in memory)."""
        if self.array is not None:
            return self.array
        values = None
        for top, strip in self:
            if values is None:
                values = np.empty((self.height, *strip.shape[1:]), dtype=strip.dtype)
            values[top : top + len(strip)] = strip
        return self.read(0, 0) if values is None else values


def _fill(
    target: np.ndarray,
    rows: _Rows,
    table_of: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    whole: Callable[[np.ndarray], np.ndarray] | None = None,
) -> None:
    """Write every strip of ``rows`` into ``target`` ``(H, W, C)`` as uint8.

    Without ``table_of`` the strips are uint8 already. With it, the uint8 value of each
    stored value is computed once (``table_of(levels, counts)``) and looked up; an image that
    is not made of integers over at most ``_MAX_LEVELS`` values goes to ``whole`` instead.
    """
    if table_of is None:
        for top, strip in rows:
            _put(target, top, strip)
        return
    found = _level_table(rows, table_of)
    if found is not None:
        lowest, table = found
        for top, strip in rows:
            _put(target, top, table[strip - lowest])
        return
    mapped = whole(rows.whole())
    for top, strip in _Rows.of(mapped):
        _put(target, top, strip)


def _put(target: np.ndarray, top: int, strip: np.ndarray) -> None:
    """Write uint8 rows ``(h, W)`` or ``(h, W, 3)`` into ``target`` in its colour mode."""
    rows = target[top : top + len(strip)]
    if strip.ndim == 2:
        rows[...] = strip[..., np.newaxis]
    elif target.shape[2] == 3:
        rows[...] = strip
    else:
        rows[..., 0] = np.asarray(Image.fromarray(np.ascontiguousarray(strip)).convert("L"))


def _level_table(
    rows: _Rows, table_of: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> tuple[int, np.ndarray] | None:
    """``(lowest value, uint8 of each value from it)`` of an integer image, from its histogram.

    None when the image is not made of integers or spans more than ``_MAX_LEVELS`` values.
    """
    lowest = highest = dtype = None
    for _, strip in rows:
        if strip.dtype.kind not in "ui" or strip.size == 0:
            return None
        low, high, dtype = int(strip.min()), int(strip.max()), strip.dtype
        lowest = low if lowest is None else min(lowest, low)
        highest = high if highest is None else max(highest, high)
    if lowest is None or highest - lowest > _MAX_LEVELS:
        return None
    counts = np.zeros(highest - lowest + 1, dtype=np.int64)
    for _, strip in rows:
        offsets = (strip - lowest).ravel().astype(np.intp)
        counts += np.bincount(offsets, minlength=len(counts))
    levels = np.arange(lowest, highest + 1, dtype=np.int64).astype(dtype)
    return lowest, table_of(levels, counts)


def _percentile_window(
    values: np.ndarray, percentiles: tuple[float, float], counts: np.ndarray | None = None
) -> np.ndarray:
    """Map any numeric image to uint8 by a percentile window over its non-background pixels.

    Pixels equal to the minimum (the background, when there is a flat one) are left out of the
    percentile computation; non-finite values count as background. The result is monotonic
    in the input; a constant image maps to 0. With ``counts``, ``values`` holds each value of
    an image once and ``counts`` how many pixels hold it (0: none): the result is then the
    uint8 value of each, the one every pixel holding it gets.
    """
    held = slice(None) if counts is None else counts > 0
    if values.dtype.kind == "f" and not np.isfinite(values[held]).all():
        finite = np.isfinite(values)
        kept = values[finite & held] if counts is not None else values[finite]
        values = np.where(finite, values, kept.min() if kept.size else 0.0)
    if values.dtype.kind not in "uif":
        values = values.astype(np.float64)
    if not values.dtype.isnative:
        values = values.astype(values.dtype.newbyteorder("="))
    stats = _window_stats(values, percentiles, counts)
    if stats is None:
        return np.zeros(values.shape, dtype=np.uint8)
    lowest, highest, low, high = stats
    if high <= low:
        return np.where(values > low, np.uint8(255), np.uint8(0))
    scale = 255.0 / (high - low)
    if values.dtype.kind in "ui" and int(highest) - int(lowest) <= 1 << 20:
        if counts is not None:
            return np.rint(np.clip((values.astype(np.float64) - low) * scale, 0.0, 255.0)).astype(
                np.uint8
            )
        # Integer data: map each possible value once through a lookup table.
        levels = np.arange(int(lowest), int(highest) + 1, dtype=np.float64)
        table = np.rint(np.clip((levels - low) * scale, 0.0, 255.0)).astype(np.uint8)
        if values.dtype.kind == "i":
            return table[np.subtract(values, lowest, dtype=np.int64)]
        return table[values - lowest]
    return _float_window(values, low, scale)


def _window_stats(
    values: np.ndarray, percentiles: tuple[float, float], counts: np.ndarray | None
) -> tuple[Any, Any, float, float] | None:
    """``(lowest, highest, low, high)`` of the window; None when all pixels are background."""
    if counts is None:
        lowest = values.min()
        foreground = values[values > lowest]
        if foreground.size == 0:
            return None
        low, high = np.percentile(foreground, percentiles, overwrite_input=True)
        return lowest, values.max(), float(low), float(high)
    held = counts > 0
    lowest, highest = values[held].min(), values[held].max()
    foreground = held & (values > lowest)
    if not foreground.any():
        return None
    low, high = _percentiles_of_levels(values[foreground], counts[foreground], percentiles)
    return lowest, highest, low, high


def _percentiles_of_levels(
    values: np.ndarray, counts: np.ndarray, percentiles: tuple[float, float]
) -> tuple[float, float]:
    """``np.percentile`` (linear) of the data holding ``values[i]`` ``counts[i]`` times.

    The same arithmetic as numpy's, on the two order statistics around each percentile,
    found in the cumulative counts: equal to ``np.percentile`` of the pixels, to the bit.
    """
    order = np.argsort(values, kind="stable")
    values, ends = values[order], np.cumsum(counts[order])
    n = int(ends[-1])
    virtual = (n - 1) * np.true_divide(percentiles, 100)
    before = np.floor(virtual)
    after = before + 1
    last = virtual >= n - 1
    before[last] = after[last] = -1
    before, after = before.astype(np.intp), after.astype(np.intp)
    gamma = virtual - before
    a = values[np.searchsorted(ends, before % n, side="right")]
    b = values[np.searchsorted(ends, after % n, side="right")]
    difference = b - a
    result = np.add(a, difference * gamma)
    np.subtract(b, difference * (1 - gamma), out=result, where=gamma >= 0.5, casting="unsafe")
    return float(result[0]), float(result[1])


def _float_window(values: np.ndarray, low: float, scale: float) -> np.ndarray:
    """``rint(clip((values - low) * scale))`` in float32, computed a strip at a time."""
    out = np.empty(values.shape, dtype=np.uint8)
    flat, into = values.reshape(-1), out.reshape(-1)
    for start in range(0, flat.size, _STRIP_PIXELS):
        part = slice(start, start + _STRIP_PIXELS)
        scaled = (flat[part].astype(np.float32) - np.float32(low)) * np.float32(scale)
        np.clip(scaled, 0.0, 255.0, out=scaled)
        into[part] = np.rint(scaled, out=scaled)
    return out


def _to_pillow(array: np.ndarray) -> Image.Image:
    if (
        not isinstance(array, np.ndarray)
        or array.dtype != np.uint8
        or array.ndim != 3
        or array.shape[2] not in (1, 3)
        or 0 in array.shape
    ):
        shape = getattr(array, "shape", None)
        dtype = getattr(array, "dtype", type(array).__name__)
        raise ValueError(
            f"expected a non-empty uint8 array shaped (H, W, 1) or (H, W, 3), got {dtype} {shape}"
        )
    if array.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(array[..., 0]))
    return Image.fromarray(np.ascontiguousarray(array))


# --------------------------------------------------------------------------------------------
# DICOM


@dataclass(frozen=True)
class _DicomHeader:
    """The elements before the pixel data, read without reading or inflating the pixels."""

    elements: pydicom.Dataset
    syntax: str | None  # the transfer syntax UID (None: not given)
    pixel_tag: int | None  # the tag of the pixel data element (None: no pixel data)
    inflated: int | None  # bytes of a deflated data set once inflated (None: not deflated)


def _decode_dicom(
    data: bytes, settings: _Settings, forced: bool, page: int | None
) -> tuple[list[np.ndarray], int]:
    name = settings.name
    header = _read_dicom_header(data, name, forced, settings.limit())
    try:
        ds = header.elements
        rows, columns = int(ds.Rows), int(ds.Columns)
        n_frames = int(ds.get("NumberOfFrames") or 1)
        photometric = str(ds.PhotometricInterpretation).strip().upper()
    except Exception as exc:  # noqa: BLE001 - missing or malformed header elements
        raise ImageDecodeError(
            name, "unreadable DICOM", f"image header: {type(exc).__name__}: {exc}"
        ) from None
    _check_pixels(name, columns, rows, settings.max_pixels)
    if page is not None:
        _check_page(name, page, n_frames)
    frames = range(n_frames) if page is None else [page]
    with settings.admit(_dicom_cost(header, len(data), settings.channels, len(frames))):
        ds = _read_dicom(data, name, forced)
        _set_missing_transfer_syntax(ds)
        pages = [_dicom_frame(ds, settings, photometric, k) for k in frames]
        del ds  # freed within the memory reserved for the decode
    return pages, n_frames


def _read_dicom_header(
    data: bytes, name: str, forced: bool, limit: tuple[int, str] | None
) -> _DicomHeader:
    """The header of a DICOM file; a deflated data set is measured, stopping past ``limit``."""
    import pydicom.uid  # noqa: PLC0415
    from pydicom.filereader import read_dataset, read_partial, read_preamble  # noqa: PLC0415

    found = _PixelTagFinder()
    try:
        source = io.BytesIO(data)
        read_preamble(source, forced)
        meta = read_dataset(source, False, True, stop_when=lambda tag, vr, size: tag.group != 2)
        syntax = meta.get("TransferSyntaxUID")
        if syntax != pydicom.uid.DeflatedExplicitVRLittleEndian:
            elements = read_partial(io.BytesIO(data), stop_when=found, force=forced)
            header = _DicomHeader(elements, syntax, found.tag, None)
        else:
            inflated, head = _inflate(memoryview(data)[source.tell() :], name, limit)
            elements = read_dataset(io.BytesIO(head), False, True, stop_when=found)
            if found.tag is None and inflated > len(head):
                raise ValueError(f"more than {len(head):,} bytes of elements before the pixels")
            header = _DicomHeader(elements, syntax, found.tag, inflated)
    except ImageDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parser error is a bad file
        if forced:
            raise _not_an_image(name) from None
        raise ImageDecodeError(name, "unreadable DICOM", f"{type(exc).__name__}: {exc}") from None
    _check_dicom_header(header, name, forced)
    return header


class _PixelTagFinder:
    """A ``stop_when`` for pydicom's readers: stops at the pixel data and remembers its tag."""

    tag: int | None = None

    def __call__(self, tag: Any, vr: Any, length: Any) -> bool:
        if int(tag) in _PIXEL_TAGS:
            self.tag = int(tag)
            return True
        return False


def _inflate(deflated: memoryview, name: str, limit: tuple[int, str] | None) -> tuple[int, bytes]:
    """Size and first elements of a deflated data set, inflated a chunk at a time.

    A decode holds the inflated data set twice (pydicom's buffer and the elements read from
    it), so inflating stops as soon as twice its size passes ``limit``. Only the elements up
    to the pixel data are kept (at most ``_DEFLATE_HEAD`` bytes).

    Raises:
        ImageTooCostlyError: The data set inflates to more than half the limit.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size, head, complete = 0, bytearray(), False
    for start in range(0, len(deflated), _INFLATE_IN):
        pending: bytes | memoryview = deflated[start : start + _INFLATE_IN]
        while True:
            chunk = inflater.decompress(pending, _INFLATE_OUT)
            if not complete and len(head) < _DEFLATE_HEAD:
                head += chunk[: _DEFLATE_HEAD - len(head)]
                complete = _reaches_pixel_data(head)
            size += len(chunk)
            if limit is not None and 2 * size > limit[0]:
                what = f"a deflated DICOM data set of more than {size:,} bytes"
                raise ImageTooCostlyError(name, 2 * size, *limit, what=what)
            pending = inflater.unconsumed_tail
            if inflater.eof or (not pending and len(chunk) < _INFLATE_OUT):
                break  # the end of the stream (padding may follow), or of this input
        if inflater.eof:
            break
    return size, bytes(head)


def _reaches_pixel_data(head: bytearray) -> bool:
    """Whether the first bytes of an explicit-VR data set hold every element before its pixels."""
    from pydicom.filereader import read_dataset  # noqa: PLC0415

    if not any(tag in head for tag in _PIXEL_TAG_BYTES):
        return False
    found = _PixelTagFinder()
    try:
        read_dataset(io.BytesIO(bytes(head)), False, True, stop_when=found)
    except Exception:  # noqa: BLE001 - a tag's bytes inside an element's value: read on
        return False
    return found.tag is not None


def _check_dicom_header(header: _DicomHeader, name: str, forced: bool) -> None:
    """Refuse files that are no image: no pixel data, or nothing readable."""
    if header.pixel_tag is not None:
        return
    if forced:
        raise _not_an_image(name)
    ds = header.elements
    if len(ds) == 0:
        raise ImageDecodeError(name, "unreadable DICOM", "no data element could be read")
    raise ImageDecodeError(
        name,
        "DICOM without pixel data",
        f"SOP class {ds.get('SOPClassUID', 'unknown')}, modality {ds.get('Modality', 'unknown')}",
        "Exclude non-image DICOM objects (reports, presentation states) with ingestion.exclude",
    )


def _dicom_cost(header: _DicomHeader, file_bytes: int, channels: int, n_frames: int) -> DecodeCost:
    """What decoding ``n_frames`` frames holds: the parsed file, one frame, the results."""
    ds = header.elements
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel") or 1)
    bits = int(ds.get("BitsAllocated") or 8)
    pixels = rows * columns
    frame = pixels * samples * max(1, -(-bits // 8))
    # A deflated data set is held twice (the inflated buffer, the elements read from it).
    parsed = file_bytes + (0 if header.inflated is None else _INFLATED_COPIES * header.inflated)
    grayscale = str(ds.get("PhotometricInterpretation", "")).strip().upper().startswith("MONO")
    wide = header.pixel_tag != _PIXEL_DATA or bits > 16
    extra = pixels * ((_DICOM_WIDE if wide else 0) + (0 if grayscale else _DICOM_COLOUR))
    # The decoder's buffers are freed before the frame is windowed: the larger of the two.
    decoding = pixels * samples * _dicom_decoder_bytes(header.syntax)
    working = max(decoding, extra + _working(pixels))
    peak = int(parsed) + frame + working + pixels * channels * n_frames
    what = f"{columns} x {rows} px, {samples} x {bits}-bit samples"
    return DecodeCost(frame * n_frames, peak, what)


def _dicom_decoder_bytes(syntax: str | None) -> int:
    """Bytes per sample the decoder of a transfer syntax holds (0: native pixel data)."""
    import pydicom.uid  # noqa: PLC0415

    if syntax is None or not pydicom.uid.UID(syntax).is_encapsulated:
        return 0
    return _RLE_DECODER if syntax == pydicom.uid.RLELossless else _CODEC_DECODER


def _read_dicom(data: bytes, name: str, forced: bool) -> pydicom.Dataset:
    """Parse a DICOM file whose header was checked (``forced``: read without the preamble)."""
    import pydicom  # noqa: PLC0415

    try:
        return pydicom.dcmread(io.BytesIO(data), force=forced)
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parser error is a bad file
        if forced:
            raise _not_an_image(name) from None
        raise ImageDecodeError(name, "unreadable DICOM", f"{type(exc).__name__}: {exc}") from None


def _dicom_frame(
    ds: pydicom.Dataset, settings: _Settings, photometric: str, page: int
) -> np.ndarray:
    """Frame ``page`` of a parsed DICOM file, as ``(H, W, C)`` uint8."""
    from pydicom.pixels import apply_color_lut  # noqa: PLC0415
    from pydicom.pixels import pixel_array as dicom_pixel_array  # noqa: PLC0415

    name, window = settings.name, settings.window
    try:
        pixels = dicom_pixel_array(ds, index=page)
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[..., 0]
        if photometric == "PALETTE COLOR":
            pixels = apply_color_lut(pixels, ds)
        _check_dicom_shape(pixels, photometric, name)
        out = np.empty((*pixels.shape[:2], settings.channels), dtype=np.uint8)
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            _fill(
                out,
                _Rows.of(pixels),
                lambda levels, counts: _dicom_grayscale(ds, levels, photometric, window, counts),
                lambda values: _dicom_grayscale(ds, values, photometric, window),
            )
        elif pixels.dtype == np.uint8:
            _fill(out, _Rows.of(pixels))
        else:
            _fill(
                out,
                _Rows.of(pixels),
                lambda levels, counts: _percentile_window(levels, window, counts),
                lambda values: _percentile_window(values, window),
            )
    except ImageDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any decoder error is a bad file
        text = f"{type(exc).__name__}: {exc}"
        truncated = "less than expected" in text or "truncated" in text.lower()
        reason = "file is truncated" if truncated else "unreadable DICOM pixel data"
        raise ImageDecodeError(name, reason, text) from None
    return out


def _check_dicom_shape(pixels: np.ndarray, photometric: str, name: str) -> None:
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ImageDecodeError(
            name,
            "unsupported pixel mode",
            f"DICOM {photometric} frame of shape {pixels.shape}",
            "Convert it to a grayscale or RGB image, or exclude it with ingestion.exclude",
        )


def _set_missing_transfer_syntax(ds: pydicom.Dataset) -> None:
    """Give preamble-less files without file meta the transfer syntax they were read with."""
    import pydicom.dataset  # noqa: PLC0415
    import pydicom.uid  # noqa: PLC0415

    meta = ds.get("file_meta") or pydicom.dataset.FileMetaDataset()
    if "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit:
        meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    elif little is False:
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    else:
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta = meta


def _dicom_grayscale(
    ds: pydicom.Dataset,
    pixels: np.ndarray,
    photometric: str,
    window_percentiles: tuple[float, float],
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Modality LUT, then the file's VOI LUT/window or a percentile window; bright = high.

    With ``counts``, ``pixels`` holds each stored value once and ``counts`` how many pixels
    hold it (see :func:`_percentile_window`).
    """
    from pydicom.pixels import apply_modality_lut  # noqa: PLC0415

    identity = ds.get("RescaleSlope") in (None, 1) and ds.get("RescaleIntercept") in (None, 0)
    if ds.get("ModalityLUTSequence") or not identity:
        values = apply_modality_lut(pixels, ds)
    else:
        values = pixels  # the usual slope 1, intercept 0: keep integers (faster, 8x less memory)
    gray = _file_voi_window(values, ds)
    if gray is not None:
        return 255 - gray if photometric == "MONOCHROME1" else gray
    if values.dtype == np.uint8:
        # 8-bit data needs no window: keep it as is, like an 8-bit PNG.
        return 255 - values if photometric == "MONOCHROME1" else values.copy()
    if photometric == "MONOCHROME1":
        # Invert first, so that the background (bright in MONOCHROME1) is the minimum.
        if values.dtype.kind == "u":
            values = (values.max() if counts is None else values[counts > 0].max()) - values
        else:
            values = -(values.astype(np.int64) if values.dtype.kind == "i" else values)
    return _percentile_window(values, window_percentiles, counts)


def _file_voi_window(values: np.ndarray, ds: pydicom.Dataset) -> np.ndarray | None:
    """Apply the file's VOI LUT or window scaled to 0..255, or None when it has no usable one.

    Like ``apply_voi_lut``, a valid VOI LUT Sequence wins over Window Center/Width. The output
    range used for scaling is that of the LUT's entries (robust to LUT descriptors that claim
    16 bits for 12-bit data) or, for a window, what the lowest and highest inputs map to.
    The result still has to be inverted for MONOCHROME1.
    """
    from pydicom.pixels import apply_voi, apply_windowing  # noqa: PLC0415

    items = ds.get("VOILUTSequence") or []
    use_lut = bool(items) and "LUTDescriptor" in items[0] and "LUTData" in items[0]
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if not (use_lut or has_window):
        return None
    try:
        if use_lut:
            # Every possible LUT position (first mapped value -32768..65535, <= 65536 entries).
            entries = apply_voi(np.arange(-(2**15), 2**17, dtype=np.int64), ds)
            out_low, out_high = float(entries.min()), float(entries.max())
            windowed = apply_voi(values, ds)
        else:
            # pydicom's output range is reversed when RescaleSlope < 0: take the ends in order,
            # so that inputs below the window stay dark.
            ends = apply_windowing(np.array([-(2.0**40), 2.0**40]), ds)
            out_low, out_high = float(ends[0]), float(ends[1])
            windowed = apply_windowing(values, ds)
    except Exception:  # noqa: BLE001 - a malformed display hint, e.g. Window Width 0
        return None  # use the percentile window instead
    if out_high == out_low:
        return None
    scaled = (windowed.astype(np.float64) - out_low) * (255.0 / (out_high - out_low))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
