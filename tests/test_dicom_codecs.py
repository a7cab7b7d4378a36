"""Which DICOM transfer syntaxes the shared decoder reads, with the permissively licensed plugins.

Files are built in ``tmp_path`` with pydicom's own encoders where one is installed (native
encodings, RLE, JPEG 2000) or Pillow (JPEG baseline); syntaxes without a permissive encoder use
the small files pydicom ships in ``pydicom.data`` next to their uncompressed twins. Every
lossless file must decode to exactly the pixels of its uncompressed twin. The README ("DICOM")
lists the syntaxes that do not decode.
"""

import io
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

from breast_cancer_pipeline.imaging import ImageDecodeError, decode_image
from tests.params import base_params

ROWS, COLUMNS = 48, 64
INGESTION = base_params("ingestion")  # decoded as ingestion decodes


def _pixels(bits: int) -> np.ndarray:
    """A smooth gradient with a planted bright square (the brightest pixels after windowing)."""
    y, x = np.mgrid[0:ROWS, 0:COLUMNS]
    top = 2**bits - 1
    image = (top * 0.6 * (x + y) / (ROWS + COLUMNS)).astype(np.uint16)
    image[10:20, 30:42] = top
    return image.astype(np.uint8) if bits == 8 else image


def _dataset(pixels: np.ndarray, bits: int, syntax: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = uid.SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    ds.SOPClassUID = uid.SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    big_endian = syntax == uid.ExplicitVRBigEndian
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">" if big_endian else "<")).tobytes()
    return ds


def _save(ds: Dataset, path: Path) -> bytes:
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def _native(syntax: str, bits: int, path: Path) -> bytes:
    return _save(_dataset(_pixels(bits), bits, syntax), path)


def _compressed(syntax: str, bits: int, path: Path, **options) -> bytes:
    ds = _dataset(_pixels(bits), bits, uid.ExplicitVRLittleEndian)
    ds.compress(syntax, _pixels(bits), **options)
    return _save(ds, path)


def _pillow_jpeg(syntax: str, bits: int, path: Path) -> bytes:
    ds = _dataset(_pixels(bits), bits, syntax)
    buffer = io.BytesIO()
    Image.fromarray(_pixels(bits)).save(buffer, format="JPEG", quality=95)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    return _save(ds, path)


def _decode(data: bytes) -> np.ndarray:
    return decode_image(
        data,
        "x.dcm",
        color_mode="grayscale",
        max_pixels=INGESTION["max_pixels"],
        window_percentiles=tuple(INGESTION["window_percentiles"]),
    )


#: (transfer syntax, how the file is built, bits stored, lossless).
BUILT = [
    (uid.ImplicitVRLittleEndian, _native, 12, True),
    (uid.ExplicitVRLittleEndian, _native, 12, True),
    (uid.ExplicitVRBigEndian, _native, 12, True),
    (uid.DeflatedExplicitVRLittleEndian, _native, 12, True),
    (uid.RLELossless, _compressed, 12, True),
    (uid.JPEG2000Lossless, _compressed, 12, True),
    (uid.JPEG2000, lambda s, b, p: _compressed(s, b, p, j2k_cr=[10]), 12, False),
    (uid.JPEGBaseline8Bit, _pillow_jpeg, 8, False),
]


@pytest.mark.parametrize(
    ("syntax", "build", "bits", "lossless"), BUILT, ids=[row[0].name for row in BUILT]
)
def test_built_files_decode(tmp_path, syntax, build, bits, lossless):
    data = build(syntax, bits, tmp_path / "image.dcm")
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == syntax
    reference = _decode(_native(uid.ExplicitVRLittleEndian, bits, tmp_path / "reference.dcm"))
    assert reference[10:20, 30:42].min() == 255 > reference[30:, :20].max()  # square planted

    decoded = _decode(data)

    assert decoded.shape == (ROWS, COLUMNS, 1)
    if lossless:
        np.testing.assert_array_equal(decoded, reference)
    else:
        assert np.abs(decoded.astype(int) - reference).mean() < 3
        assert decoded[12:18, 32:40].min() > 240


#: (transfer syntax, pydicom's test file, its uncompressed twin or None when it has none).
SHIPPED = [
    (uid.JPEGLosslessSV1, "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm"),
    (uid.JPEGLSLossless, "MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
    (uid.JPEGLSNearLossless, "JPEGLSNearLossless_08.dcm", None),
]


@pytest.mark.parametrize(("syntax", "name", "twin"), SHIPPED, ids=[r[0].name for r in SHIPPED])
def test_shipped_files_decode(syntax, name, twin):
    path = Path(get_testdata_file(name))
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == syntax

    decoded = _decode(path.read_bytes())

    assert decoded.shape == (ds.Rows, ds.Columns, 1)
    assert len(np.unique(decoded)) > 2  # bars of several grey levels, not a blank frame
    if twin is not None:
        np.testing.assert_array_equal(decoded, _decode(Path(get_testdata_file(twin)).read_bytes()))


def _mpeg4(path: Path) -> bytes:
    ds = _dataset(_pixels(8), 8, uid.MPEG4HP41)
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01\x67" + bytes(64)])
    ds["PixelData"].VR = "OB"
    return _save(ds, path)


#: (transfer syntax, how the file is made, what the error must name). 12-bit JPEG needs the
#: GPL-3.0 libjpeg (GDCM's and Pillow's plugins refuse it); no decoder reads video.
UNSUPPORTED = [
    (
        uid.JPEGExtended12Bit,
        lambda p: Path(get_testdata_file("JPGExtended.dcm")).read_bytes(),
        "JPEG Extended",
    ),
    (uid.MPEG4HP41, _mpeg4, "MPEG-4 AVC/H.264"),
]


@pytest.mark.parametrize(
    ("syntax", "make", "named"), UNSUPPORTED, ids=[row[0].name for row in UNSUPPORTED]
)
def test_unsupported_syntaxes_fail_naming_the_syntax(tmp_path, syntax, make, named):
    data = make(tmp_path / "image.dcm")
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == syntax

    with pytest.raises(ImageDecodeError, match="unreadable DICOM pixel data") as caught:
        _decode(data)

    assert named in str(caught.value)


def _licence(name: str) -> str:
    meta = distribution(name).metadata
    classifiers = [c for c in meta.get_all("Classifier") or [] if c.startswith("License")]
    return " ".join([meta.get("License-Expression") or "", meta.get("License") or "", *classifiers])


@pytest.mark.parametrize(
    "name", ["pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "python-gdcm"]
)
def test_decoders_are_permissively_licensed(name):
    licence = _licence(name)
    assert "GPL" not in licence
    assert any(word in licence for word in ("MIT", "BSD", "Apache")), licence


def test_the_gpl_libjpeg_plugin_is_not_installed():
    with pytest.raises(PackageNotFoundError):
        distribution("pylibjpeg-libjpeg")
