"""Hostile image files built in memory, a row at a time: small on the wire, huge once decoded.

Never holding the decoded pixels, the builders make files of hundreds of megapixels in a
fraction of a second (the tests' own memory is not what they measure).
"""

from __future__ import annotations

import struct
import zlib

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

#: PNG colour types and their samples per pixel.
PNG_SAMPLES = {0: 1, 2: 3, 4: 2, 6: 4}


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def zeros_png(width: int, height: int, colour_type: int = 6, bit_depth: int = 8) -> bytes:
    """A PNG of zeros (colour type 6: RGBA, fully transparent black), compressed row by row.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        colour_type: 0 gray, 2 RGB, 4 gray + alpha, 6 RGBA.
        bit_depth: 8 or 16.
    """
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + width * PNG_SAMPLES[colour_type] * bit_depth // 8)  # filter byte 0
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def deflated_dicom(inflated_pixel_bytes: int, rows: int = 64, columns: int = 64) -> bytes:
    """A deflated DICOM (1.2.840.10008.1.2.1.99) whose pixel data inflates to that many zeros.

    The header says ``rows`` x ``columns`` 16-bit pixels; the pixel data element holds
    ``inflated_pixel_bytes`` bytes, whatever the header says (a deflate bomb when larger).
    """
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # digital mammography
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    pixel_header = b"\xe0\x7f\x10\x00OW\0\0" + struct.pack("<I", inflated_pixel_bytes)
    parts = [compressor.compress(body.getvalue() + pixel_header)]
    block = b"\0" * 2**20
    for start in range(0, inflated_pixel_bytes, len(block)):
        parts.append(compressor.compress(block[: inflated_pixel_bytes - start]))
    return head.getvalue() + b"".join(parts) + compressor.flush()


def chained_tiff(pages: int) -> bytes:
    """A TIFF of ``pages`` chained 1 x 1 8-bit grey pages: each directory points at the next.

    Args:
        pages: Number of pages (50,000 make a 5 MB file whose page count takes Pillow minutes).
    """
    entries = 9
    size = 2 + entries * 12 + 4 + 1  # directory, next offset, the page's one pixel
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for k in range(pages):
        start = 8 + k * size
        pixel = start + size - 1
        following = start + size if k < pages - 1 else 0
        tags = [
            (256, 3, 1, 1),  # ImageWidth
            (257, 3, 1, 1),  # ImageLength
            (258, 3, 1, 8),  # BitsPerSample
            (259, 3, 1, 1),  # Compression: none
            (262, 3, 1, 1),  # PhotometricInterpretation: black is zero
            (273, 4, 1, pixel),  # StripOffsets
            (277, 3, 1, 1),  # SamplesPerPixel
            (278, 3, 1, 1),  # RowsPerStrip
            (279, 4, 1, 1),  # StripByteCounts
        ]
        out += struct.pack("<H", entries)
        for tag, kind, count, value in tags:
            out += struct.pack("<HHII", tag, kind, count, value)
        out += struct.pack("<I", following) + bytes([k % 256])
    return bytes(out)
