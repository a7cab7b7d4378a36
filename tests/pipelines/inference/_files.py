"""Tiny image files of every served format, built in memory."""

import io
from pathlib import Path

import numpy as np
from PIL import Image
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
