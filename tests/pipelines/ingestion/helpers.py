"""Helpers for the ingestion tests: write a source tree in tmp_path, run the nodes on it."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from breast_cancer_pipeline.datasets import ImageFolderDataset, ImageStoreDataset
from breast_cancer_pipeline.imaging import pixel_sha256
from breast_cancer_pipeline.pipelines.ingestion.nodes import (
    collapse_duplicates,
    collect_conversion,
    index_source,
    plan_conversion,
    publish_conversion,
    split_manifest,
)
from tests.params import base_params

#: Test overrides of conf/base: tiny images convert in this process, fast, with a 60/20/20 split.
TEST_OVERRIDES = {
    "max_pixels": 10_000_000,
    "workers": 1,
    "png_compress_level": 1,
    "split": {"ratios": [0.6, 0.2, 0.2], "val_from_train": 0.25, "seed": 0},
}
#: The parameters of the ingestion tests: conf/base with :data:`TEST_OVERRIDES`.
PARAMS = base_params("ingestion", **TEST_OVERRIDES)


def params(**overrides) -> dict:
    """The test parameters with top-level (and ``csv``/``split`` sub-key) overrides."""
    result = copy.deepcopy(PARAMS)
    for key, value in overrides.items():
        if key in ("csv", "split"):
            result[key].update(value)
        else:
            result[key] = value
    return result


def image_bytes(seed: int, size: int = 24, fmt: str = "PNG", mode: str = "L") -> bytes:
    """A small random image, distinct per seed, encoded as ``fmt`` in Pillow ``mode``."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    if mode == "I;16":
        pixels = rng.integers(0, 4096, (size, size), dtype=np.uint16)
        Image.fromarray(pixels).save(buffer, format=fmt)
    elif mode == "RGB":
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format=fmt)
    else:
        pixels = rng.integers(0, 255, (size, size), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def two_classes(n: int) -> dict[str, bytes]:
    """``a/<i>.png`` and ``b/<i>.png``, ``n`` distinct small images in each class."""
    return {
        f"{label}/{i}.png": image_bytes(10 * c + i)
        for c, label in enumerate("ab")
        for i in range(n)
    }


def tiff_pages(levels: list[int], size: int = 16) -> bytes:
    """A multi-page 8-bit TIFF, page k filled with ``levels[k]`` plus a small pattern."""
    pattern = (np.arange(size * size, dtype=np.uint8).reshape(size, size) % 7).astype(np.uint8)
    pages = [Image.fromarray(pattern + np.uint8(level)) for level in levels]
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    return buffer.getvalue()


def dicom_frames(levels: list[int], size: int = 16) -> bytes:
    """A multi-frame 8-bit DICOM, frame k filled like :func:`tiff_pages`.

    Built from pydicom's bundled CT example (a fresh copy on each access), re-filled.
    """
    from pydicom import examples  # noqa: PLC0415

    pattern = (np.arange(size * size, dtype=np.uint8).reshape(size, size) % 7).astype(np.uint8)
    ds = examples.ct
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        ds.pop(keyword, None)
    ds.Rows = ds.Columns = size
    ds.NumberOfFrames = len(levels)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.stack([pattern + np.uint8(level) for level in levels]).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_image(seed: int, rows: int = 16, cols: int = 12, **tags: str) -> bytes:
    """A tiny 12-bit MONOCHROME2 DICOM file, with ``tags`` (``{keyword: value}``) set."""
    import pydicom  # noqa: PLC0415
    from pydicom.dataset import FileMetaDataset  # noqa: PLC0415
    from pydicom.uid import (  # noqa: PLC0415
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    pixels = np.random.default_rng(seed).integers(0, 4096, (rows, cols), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``{relative path: bytes}`` under ``root``."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@dataclass
class Ingested:
    """What one ingestion run produced."""

    inventory: pd.DataFrame
    manifest: pd.DataFrame
    rejected: pd.DataFrame
    duplicates: pd.DataFrame
    store: ImageStoreDataset


def store_for(out: Path) -> ImageStoreDataset:
    """The image store of an output folder."""
    return ImageStoreDataset(path=str(out / "images"), journal=str(out / "conversion_index.jsonl"))


def ingest(
    source: Path,
    out: Path,
    run_params: dict,
    external: Path | None = None,
    cluster: dict | None = None,
) -> Ingested:
    """Run the ingestion nodes and datasets, in order, as ``kedro run`` does.

    ``external`` is the external site's folder (``ingestion.external_dir``), if any;
    ``cluster`` the ``cluster`` parameters (none: this machine).
    """
    raw = ImageFolderDataset(str(source), run_params["follow_external_links"]).load()
    site = ImageFolderDataset(None if external is None else str(external)).load()
    inventory = index_source(raw, run_params, site)
    store = store_for(out)
    store.save(plan_conversion(raw, inventory, run_params, site, cluster))
    info, rejected = collect_conversion(store.load(), inventory, run_params)
    unique, duplicates = collapse_duplicates(info)
    manifest = split_manifest(unique, run_params)
    store.save(publish_conversion(manifest))
    return Ingested(inventory, manifest, rejected, duplicates, store)


def png_pixels(data: bytes) -> str:
    """The pixel sha256 of a grayscale PNG, as the manifest records it."""
    return pixel_sha256(np.asarray(Image.open(io.BytesIO(data)))[..., None])


def committed_pngs(images: Path) -> dict[str, str]:
    """``{path: pixel sha256}`` of the PNGs under their real names (what a later stage sees
    on disk; the staging area and temporaries excluded)."""
    return {
        p.relative_to(images).as_posix(): png_pixels(p.read_bytes())
        for p in images.rglob("*.png")
        if not any(part.startswith(".") for part in p.relative_to(images).parts)
    }


def assert_grouped(manifest: pd.DataFrame) -> None:
    """No group (patient) in two splits; every split is a known one."""
    assert set(manifest["split"]) <= {"train", "val", "test"}
    assert manifest.groupby("group")["split"].nunique().max() == 1


PROJECT = Path(__file__).resolve().parents[3]

KILL_AT_RENAME = textwrap.dedent(
    """
    import os, sys
    from breast_cancer_pipeline.datasets import image_store
    from tests.pipelines.ingestion.helpers import ingest, params
    from pathlib import Path

    renames = {"n": 0}
    real_replace = os.replace

    def replace_then_die(src, dst):
        renames["n"] += 1
        if renames["n"] == int(sys.argv[3]):
            os._exit(17)  # killed: the PNG is written under its temporary name, not renamed
        real_replace(src, dst)

    image_store.os.replace = replace_then_die
    ingest(Path(sys.argv[1]), Path(sys.argv[2]), params())
    """
)


def run_killed(script: str, *args: str) -> None:
    """Run ``script`` in a fresh interpreter at the project root; it must die with code 17."""
    killed = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=PROJECT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == 17, killed.stderr


def kill_at_rename(src: Path, out: Path, nth: int) -> None:
    """Ingest ``src`` into ``out`` in a subprocess killed at the store's ``nth`` rename."""
    run_killed(KILL_AT_RENAME, str(src), str(out), str(nth))
