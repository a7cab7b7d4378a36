"""Tiny image files of every served format, built in memory."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def pillow_file(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def dicom_file(tmp_path: Path, pixels: np.ndarray) -> bytes:
    """A 16-bit MONOCHROME2 DICOM file of ``pixels`` (2-D uint16)."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    path = tmp_path / "image.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def every_format(tmp_path: Path, size: int = 40) -> dict[str, bytes]:
    """PNG, JPEG, TIFF and DICOM files of the same gradient image."""
    gradient = np.tile(np.linspace(0, 255, size, dtype=np.uint8), (size, 1))
    return {
        "a.png": pillow_file(gradient, "PNG"),
        "b.jpg": pillow_file(gradient, "JPEG"),
        "c.tif": pillow_file(gradient, "TIFF"),
        "d.dcm": dicom_file(tmp_path, gradient.astype(np.uint16) * 16),
    }


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def dark_png16(width: int, height: int, square: int = 64) -> bytes:
    """A 16-bit grayscale PNG, black but for a bright top-left square, compressed row by row.

    13000 x 13000 gives a 0.33 MB file that decodes to 338 MB of pixels (a decompression
    bomb), built without ever holding the pixels in memory.
    """
    compressor = zlib.compressobj(9)
    black = b"\0" * (1 + 2 * width)  # filter byte 0, then big-endian samples
    lit = b"\0" + b"\xff\xf0" * square + b"\0" * (2 * (width - square))
    data = b"".join(compressor.compress(lit if y < square else black) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)  # 16-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data + compressor.flush())
        + _png_chunk(b"IEND", b"")
    )


def dicom_header_only(tmp_path: Path, rows: int, columns: int) -> bytes:
    """A DICOM file whose header claims ``rows`` x ``columns`` but holds 8 pixels of data."""
    small = dicom_file(tmp_path, np.zeros((2, 4), dtype=np.uint16))
    ds = dcmread(io.BytesIO(small))
    ds.Rows, ds.Columns = rows, columns
    path = tmp_path / "claims_more.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()
