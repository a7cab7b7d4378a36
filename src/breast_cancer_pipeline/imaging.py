"""Decode, resize, encode and fingerprint breast images: the one place that knows image formats.

Ingestion (source file -> PNG), training and serving (uploaded bytes -> array) all call
:func:`decode_image` and :func:`resize_image`, so an image is turned into pixels the same way
everywhere. This module deliberately imports only numpy, Pillow and pydicom (never TensorFlow),
so the data stages and the server start quickly.

Decoding rules, in the order they are applied:

* The content is sniffed, not the file name: bytes with the DICOM magic ``DICM`` at offset 128
  are read by pydicom; otherwise Pillow tries PNG, JPEG (and MPO), BMP, GIF and TIFF; if Pillow
  does not recognise the bytes and the name ends in ``.dcm``/``.dicom`` or has no extension,
  pydicom force-reads them (DICOM files without the 128-byte preamble).
* The pixel count (width x height, from the header) is compared with ``max_pixels`` before any
  pixel is decoded.
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
outside. The flat, zero-valued surroundings of a scanned mammogram cover 50-70 % of the image;
with percentiles taken over the whole image, the high percentile falls inside the breast and
2-3.6 % of the breast pixels of the CBIS-DDSM samples saturate at 255, against 0.7-1.4 % with
this rule. When no flat background exists, the rule is the plain percentile window. The mapping
is monotonic; 8-bit data (PNG, JPEG, 8-bit DICOM without a window) is kept as it is.

Pages: a multi-page TIFF, an animated GIF or PNG and a multi-frame DICOM hold several images;
:func:`decode_image` returns one (``page``, the first by default), :func:`decode_pages` the
first or all of them together with the number the file holds. The frames of an MPO (a camera
JPEG with an embedded preview) count as one page.

Color modes: ``grayscale`` returns ``(H, W, 1)`` using ITU-R 601-2 luma (Pillow mode ``L``);
``rgb`` returns ``(H, W, 3)`` with grayscale sources replicated to the three channels.
"""

import hashlib
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
import pydicom.uid
from PIL import (  # the plugins are imported to register exactly the formats we open
    BmpImagePlugin,  # noqa: F401
    GifImagePlugin,  # noqa: F401
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,  # noqa: F401
    PngImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
    UnidentifiedImageError,
)
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing
from pydicom.pixels import pixel_array as dicom_pixel_array

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".dcm", ".dicom"}
)
"""File extensions (lower case, with the dot) that ingestion treats as images."""

COLOR_MODES: tuple[str, ...] = ("grayscale", "rgb")
"""Valid values of the ``color_mode`` argument (parameter ``ingestion.color_mode``)."""

#: Settings :func:`decode_image` uses when a caller gives none (e.g. re-reading ingestion's own
#: 8-bit PNGs). Ingestion passes ``ingestion.max_pixels`` and ``ingestion.window_percentiles``,
#: serving its own, lower pixel limit (``inference.max_pixels``); a test keeps these equal to
#: ``conf/base``.
DEFAULT_MAX_PIXELS = 178_956_970
"""Pixel limit when none is given: twice Pillow's ``MAX_IMAGE_PIXELS``, where Pillow refuses."""

DEFAULT_WINDOW_PERCENTILES = (0.5, 99.5)
"""Percentile window when none is given (``ingestion.window_percentiles`` in ``conf/base``)."""

MULTIPAGE_MODES: tuple[str, ...] = ("first", "all")
"""Valid values of :func:`decode_pages`' ``pages`` argument."""

_DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
_PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF")  # JPEG also opens MPO (camera) files
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_RGB_MODES = frozenset({"CMYK", "YCbCr", "LAB", "HSV", "RGBX"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

_FIX_EXCLUDE = "Re-export the file or exclude it with ingestion.exclude"


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

    Returns:
        A new, writable ``uint8`` array of shape ``(H, W, 1)`` or ``(H, W, 3)``.

    Raises:
        ValueError: An argument is invalid (not an :class:`ImageDecodeError`).
        ImageDecodeError: The file is empty, truncated, corrupt, not an image, too large, has
            no pixel data, has fewer pages than ``page`` or uses an unsupported pixel format.
    """
    if not isinstance(page, int) or page < 0:
        raise ValueError(f"page must be an int >= 0, got {page!r}")
    settings = _Settings(name, color_mode, max_pixels, window_percentiles)
    return _decode(data, settings, page)[0][0]


def decode_pages(
    data: bytes,
    name: str,
    *,
    color_mode: str,
    max_pixels: int | None,
    window_percentiles: tuple[float, float],
    pages: str,
) -> tuple[list[np.ndarray], int]:
    """Decode the first or every page/frame of an image file, and count its pages.

    Same rules and arguments as :func:`decode_image`; every page is decoded on its own (its
    own percentile window).

    Args:
        data: The whole file content.
        name: File name (messages, DICOM hint).
        color_mode: ``"grayscale"`` or ``"rgb"``.
        max_pixels: Pixel limit per page, or ``None``.
        window_percentiles: The percentile window for high-bit-depth pages.
        pages: ``"first"`` (decode page 0) or ``"all"``.

    Returns:
        ``(arrays, n_pages)``: the decoded pages (one for ``"first"``) and how many pages the
        file holds.

    Raises:
        ValueError: An argument is invalid.
        ImageDecodeError: As :func:`decode_image`.
    """
    if pages not in MULTIPAGE_MODES:
        raise ValueError(f"pages must be one of {MULTIPAGE_MODES}, got {pages!r}")
    settings = _Settings(name, color_mode, max_pixels, window_percentiles)
    return _decode(data, settings, 0 if pages == "first" else None)


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


@dataclass(frozen=True)
class _Settings:
    """The decoding arguments, checked once: bad values are ``ValueError``, not bad files."""

    name: str
    color_mode: str
    max_pixels: int | None
    window: tuple[float, float]

    def __post_init__(self) -> None:
        if self.color_mode not in COLOR_MODES:
            raise ValueError(
                f"color_mode (parameter ingestion.color_mode) must be one of "
                f"{', '.join(repr(m) for m in COLOR_MODES)}, got {self.color_mode!r}"
            )
        if self.max_pixels is not None and (
            not isinstance(self.max_pixels, int) or self.max_pixels < 1
        ):
            raise ValueError(f"max_pixels must be a positive int or None, got {self.max_pixels!r}")
        low, high = self.window
        if not 0 <= low < high <= 100:
            raise ValueError(
                "window_percentiles must be (low, high) with 0 <= low < high <= 100, "
                f"got {self.window!r}"
            )


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
        frames = getattr(image, "n_frames", 1)
        n_pages = 1 if image.format == "MPO" else frames  # an MPO's second frame is a preview
        if page is not None:
            _check_page(name, page, frames)
        arrays = [
            _pillow_page(image, settings, k) for k in (range(n_pages) if page is None else [page])
        ]
    return arrays, n_pages


def _pillow_page(image: Image.Image, settings: _Settings, page: int) -> np.ndarray:
    """Decode page ``page`` of an open Pillow image."""
    name = settings.name
    try:
        if page or image.tell():
            image.seek(page)
            _check_pixels(name, *image.size, settings.max_pixels)
        _refuse_16_bit_colour(image, name)
        with _strict_truncation():
            image.load()
        oriented = ImageOps.exif_transpose(image)
    except ImageDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any decoder error is a bad file
        raise _pillow_error(name, exc) from None
    pixels = _pillow_to_array(oriented, name, settings.window)
    return _apply_color_mode(pixels, settings.color_mode)


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


def _pillow_to_array(
    image: Image.Image, name: str, window_percentiles: tuple[float, float]
) -> np.ndarray:
    """Return ``(H, W)`` or ``(H, W, 3)`` uint8 pixels of a loaded Pillow image."""
    mode = image.mode
    if mode in _HIGH_DEPTH_MODES:
        return _percentile_window(np.asarray(image), window_percentiles)
    if mode == "1":
        image = image.convert("L")
    elif mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in _RGB_MODES:
        image = image.convert("RGB")
    elif mode in _ALPHA_MODES:
        image = image.convert("LA" if mode in ("LA", "La") else "RGBA")
    elif mode not in ("L", "RGB"):
        raise ImageDecodeError(
            name,
            "unsupported pixel mode",
            f"Pillow mode {mode!r}",
            "Convert it to 8-bit grayscale or RGB, or exclude it with ingestion.exclude",
        )
    pixels = np.asarray(image)
    if image.mode in ("LA", "RGBA"):
        # Composite on black: colour * alpha / 255, rounded.
        alpha = pixels[..., -1:].astype(np.uint16)
        pixels = ((pixels[..., :-1] * alpha + 127) // 255).astype(np.uint8)
        if pixels.shape[2] == 1:
            pixels = pixels[..., 0]
    return pixels


def _apply_color_mode(pixels: np.ndarray, color_mode: str) -> np.ndarray:
    """Turn ``(H, W)`` or ``(H, W, 3)`` uint8 pixels into a new ``(H, W, C)`` array."""
    if color_mode == "grayscale":
        if pixels.ndim == 3:
            pixels = np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).convert("L"))
        return np.array(pixels[..., np.newaxis], dtype=np.uint8)
    if pixels.ndim == 2:
        return np.repeat(pixels[..., np.newaxis], 3, axis=2).astype(np.uint8, copy=False)
    return np.array(pixels, dtype=np.uint8)


def _percentile_window(values: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Map any numeric image to uint8 by a percentile window over its non-background pixels.

    Pixels equal to the minimum (the background, when there is a flat one) are left out of the
    percentile computation; non-finite values count as background. The result is monotonic
    in the input; a constant image maps to 0.
    """
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        finite = np.isfinite(values)
        floor = values[finite].min() if finite.any() else 0.0
        values = np.where(finite, values, floor)
    if values.dtype.kind not in "uif":
        values = values.astype(np.float64)
    if values.dtype.byteorder not in ("=", "|"):
        values = values.astype(values.dtype.newbyteorder("="))
    lowest = values.min()
    foreground = values[values > lowest]
    if foreground.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = (float(v) for v in np.percentile(foreground, percentiles))
    if high <= low:
        return np.where(values > low, np.uint8(255), np.uint8(0))
    scale = 255.0 / (high - low)
    highest = values.max()
    if values.dtype.kind in "ui" and int(highest) - int(lowest) <= 1 << 20:
        # Integer data: map each possible value once through a lookup table.
        levels = np.arange(int(lowest), int(highest) + 1, dtype=np.float64)
        table = np.rint(np.clip((levels - low) * scale, 0.0, 255.0)).astype(np.uint8)
        if values.dtype.kind == "i":
            return table[np.subtract(values, lowest, dtype=np.int64)]
        return table[values - lowest]
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(scale)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return np.rint(scaled, out=scaled).astype(np.uint8)


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


def _decode_dicom(
    data: bytes, settings: _Settings, forced: bool, page: int | None
) -> tuple[list[np.ndarray], int]:
    name = settings.name
    ds = _read_dicom(data, name, forced)
    try:
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
    _set_missing_transfer_syntax(ds)
    frames = range(n_frames) if page is None else [page]
    return [_dicom_frame(ds, settings, photometric, k) for k in frames], n_frames


def _read_dicom(data: bytes, name: str, forced: bool) -> pydicom.Dataset:
    """Parse a DICOM file that holds pixel data (``forced``: read without the preamble)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=forced)
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parser error is a bad file
        if forced:
            raise _not_an_image(name) from None
        raise ImageDecodeError(name, "unreadable DICOM", f"{type(exc).__name__}: {exc}") from None
    has_pixels = any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS)
    if forced and not has_pixels:
        raise _not_an_image(name)
    if len(ds) == 0:
        raise ImageDecodeError(name, "unreadable DICOM", "no data element could be read")
    if not has_pixels:
        raise ImageDecodeError(
            name,
            "DICOM without pixel data",
            f"SOP class {ds.get('SOPClassUID', 'unknown')}, "
            f"modality {ds.get('Modality', 'unknown')}",
            "Exclude non-image DICOM objects (reports, presentation states) with ingestion.exclude",
        )
    return ds


def _dicom_frame(
    ds: pydicom.Dataset, settings: _Settings, photometric: str, page: int
) -> np.ndarray:
    """Frame ``page`` of a parsed DICOM file, as ``(H, W, C)`` uint8."""
    name, window = settings.name, settings.window
    try:
        pixels = dicom_pixel_array(ds, index=page)
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            pixels = _dicom_grayscale(ds, pixels, photometric, window)
        elif photometric == "PALETTE COLOR":
            pixels = apply_color_lut(pixels, ds)
        if pixels.dtype != np.uint8:
            pixels = _percentile_window(pixels, window)
    except ImageDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any decoder error is a bad file
        text = f"{type(exc).__name__}: {exc}"
        truncated = "less than expected" in text or "truncated" in text.lower()
        reason = "file is truncated" if truncated else "unreadable DICOM pixel data"
        raise ImageDecodeError(name, reason, text) from None
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ImageDecodeError(
            name,
            "unsupported pixel mode",
            f"DICOM {photometric} frame of shape {pixels.shape}",
            "Convert it to a grayscale or RGB image, or exclude it with ingestion.exclude",
        )
    return _apply_color_mode(pixels, settings.color_mode)


def _set_missing_transfer_syntax(ds: pydicom.Dataset) -> None:
    """Give preamble-less files without file meta the transfer syntax they were read with."""
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
) -> np.ndarray:
    """Modality LUT, then the file's VOI LUT/window or a percentile window; bright = high."""
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
            values = values.max() - values
        else:
            values = -(values.astype(np.int64) if values.dtype.kind == "i" else values)
    return _percentile_window(values, window_percentiles)


def _file_voi_window(values: np.ndarray, ds: pydicom.Dataset) -> np.ndarray | None:
    """Apply the file's VOI LUT or window scaled to 0..255, or None when it has no usable one.

    Like ``apply_voi_lut``, a valid VOI LUT Sequence wins over Window Center/Width. The output
    range used for scaling is that of the LUT's entries (robust to LUT descriptors that claim
    16 bits for 12-bit data) or, for a window, what the lowest and highest inputs map to.
    The result still has to be inverted for MONOCHROME1.
    """
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
