"""Conversion planning and its results: one picklable task per image, records back.

:func:`build_plan` turns the inventory into a :class:`~breast_cancer_pipeline.file_records.
StorePlan` that the ``intermediate_images`` store carries out (in parallel, incrementally);
:func:`collect_records` joins the store's records back to the inventory.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline import imaging
from breast_cancer_pipeline.cluster import available_cores
from breast_cancer_pipeline.columns import dicom_tags, read_dicom_header, tag_keywords
from breast_cancer_pipeline.file_records import FileTask, StoredFiles, StorePlan
from breast_cancer_pipeline.imaging import (
    ImageDecodeError,
    decode_image,
    decode_pages,
    encode_png,
    pixel_sha256,
)
from breast_cancer_pipeline.manifest import MASK_PATH, NUMERIC_COLUMNS, REQUIRED_COLUMNS
from breast_cancer_pipeline.masks import as_mask, distinct_values, encode_mask, merge_masks

from .mask_pairing import MASK_SOURCES, split_sources

logger = logging.getLogger(__name__)

#: Bump when the conversion's output changes for the same source and settings (new statistics,
#: another PNG encoding, another record layout): every image is then converted again.
CONVERSION_VERSION = 3
#: The manifest columns a conversion measures, in manifest order.
STAT_COLUMNS = tuple(c for c in REQUIRED_COLUMNS if c in {*NUMERIC_COLUMNS, "sha256"})
#: Columns of ``rejected_files.csv``: the reasons, never the files' content.
REJECTED_COLUMNS = ["path", "reason", "detail"]
#: The field of an ingested row that carries its DICOM tags (``{keyword: text}``, empty for
#: other formats) until :mod:`.descriptors` turns them into columns.
TAGS_FIELD = "dicom_tags"


class BadFilesError(ValueError):
    """One or more source files cannot be ingested; the message lists every one."""


@dataclass(frozen=True)
class ConvertToPng:
    """Decode one source image with the shared decoder and encode its page(s) as lossless PNG.

    Runs in a worker process of the image store: it must stay picklable and return only the
    PNG bytes and a small JSON-serialisable record.
    """

    load: Callable[[], bytes]
    name: str
    png_path: str
    color_mode: str
    max_pixels: int | None
    max_decoded_bytes: int | None
    window_percentiles: tuple[float, float]
    multipage: str
    compress_level: int
    tag_keywords: tuple[str, ...] = ()
    masks: tuple[tuple[str, Callable[[], bytes]], ...] = ()
    mask_png_path: str = ""

    def __call__(self) -> tuple[dict[str, bytes] | None, dict[str, Any]]:
        """Convert the image (and its lesion masks, merged into one).

        Returns:
            ``(pngs, record)``: on success ``{PNG path: bytes}`` (one per page under
            ``multipage: all``, else one; plus the merged mask at ``mask_png_path``) and a
            record with ``n_pages``, ``pages`` (each page's ``path``, ``page`` and
            statistics), ``tags`` (the ``tag_keywords`` a DICOM header holds, ``{}`` for other
            formats) and, with masks, ``masks`` (one entry per mask file:
            :func:`mask_record`) and ``mask_path`` (empty when a mask could not be read or
            differs in size from the image); for a bad file ``None`` and ``error`` (a short
            reason) with ``detail`` (the message and its fix).
        """
        record: dict[str, Any] = {"source_path": self.name}
        try:
            data = self.load()
        except OSError as exc:
            return None, {**record, "error": "cannot read file", "detail": str(exc)}
        try:
            pages, n_pages = decode_pages(
                data,
                self.name,
                color_mode=self.color_mode,
                max_pixels=self.max_pixels,
                window_percentiles=self.window_percentiles,
                max_decoded_bytes=self.max_decoded_bytes,
                pages="all" if self.multipage == "all" else "first",
            )
        except ImageDecodeError as exc:
            return None, {**record, "error": exc.reason, "detail": str(exc)}
        if n_pages > 1 and self.multipage == "error":
            detail = (
                f"{self.name!r} holds {n_pages} pages/frames and ingestion.multipage is "
                "'error'; set ingestion.multipage to first or all, or exclude it with "
                "ingestion.exclude"
            )
            return None, {**record, "error": "multi-page file", "detail": detail}
        paths = (
            [self.png_path]
            if len(pages) == 1
            else [page_path(self.name, k) for k in range(n_pages)]
        )
        header = read_dicom_header(data, self.name) if self.tag_keywords else None
        tags = dicom_tags(header, self.tag_keywords) if header is not None else {}
        record.update(n_pages=n_pages, pages=[], tags=tags)
        pngs = {}
        for page, (path, pixels) in enumerate(zip(paths, pages, strict=True)):
            record["pages"].append({"path": path, "page": page, **_statistics(pixels)})
            pngs[path] = encode_png(pixels, compress_level=self.compress_level)
        if self.masks:
            limits = {"max_pixels": self.max_pixels, "max_decoded_bytes": self.max_decoded_bytes}
            merged, record["masks"] = convert_masks(self.masks, pages[0].shape[:2], limits)
            record["mask_path"] = self.mask_png_path if merged is not None else ""
            if merged is not None:
                pngs[self.mask_png_path] = encode_mask(merged, compress_level=self.compress_level)
        return pngs, record


def convert_masks(
    masks: tuple[tuple[str, Callable[[], bytes]], ...],
    shape: tuple[int, int],
    limits: Mapping[str, int | None],
) -> tuple[np.ndarray | None, list[dict[str, Any]]]:
    """Read an image's mask files and merge them; a record of each.

    Args:
        masks: ``(source path, loader)`` of each mask file.
        shape: The image's ``(height, width)``.
        limits: ``max_pixels`` and ``max_decoded_bytes`` of the decoder (as for images).

    Returns:
        ``(merged, records)``: the merged boolean mask, or None when a mask cannot be read or
        differs in size from the image (the gate names it); one :func:`mask_record` per file.
    """
    records, read = [], []
    for name, load in masks:
        try:
            pixels = decode_image(load(), name, color_mode="rgb", **limits)
        except (OSError, ImageDecodeError) as exc:
            records.append({"source": name, "error": str(exc)})
            continue
        records.append(mask_record(name, pixels))
        read.append(as_mask(pixels))
    if len(read) < len(masks) or any(mask.shape != tuple(shape) for mask in read):
        return None, records
    return merge_masks(read, [name for name, _ in masks]), records


def mask_record(name: str, pixels: np.ndarray) -> dict[str, Any]:
    """What the gate checks of one mask file: its size, its distinct values, its lesion."""
    return {
        "source": name,
        "error": "",
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        "n_values": distinct_values(pixels),
        "lesion_pixels": int(as_mask(pixels).sum()),
    }


def build_plan(
    raw_files: Mapping[str, Callable[[], bytes]], inventory: pd.DataFrame, params: dict
) -> StorePlan:
    """One task per indexed image without a problem, keyed by source and settings.

    Raises:
        ValueError: Two sources would be converted to the same PNG path.
    """
    settings = _settings_fingerprint(params)
    files: dict[str, FileTask] = {}
    owner: dict[str, str] = {}
    usable = inventory[inventory["problem"] == ""]
    mask_cells = usable[MASK_SOURCES] if MASK_SOURCES in usable else [""] * len(usable)
    for rel, cell in zip(usable["source_path"], mask_cells, strict=True):
        png = png_path(rel)
        if png in owner:
            raise ValueError(
                f"{owner[png]!r} and {rel!r} would both be stored as {png!r}; rename one of "
                "them or exclude it with ingestion.exclude"
            )
        owner[png] = rel
        masks = tuple((mask, raw_files[mask]) for mask in split_sources(cell))
        key = _task_key([(rel, raw_files[rel]), *masks], settings)
        task = ConvertToPng(
            load=raw_files[rel],
            name=rel,
            png_path=png,
            color_mode=params["color_mode"],
            max_pixels=params["max_pixels"],
            max_decoded_bytes=params["max_decoded_bytes"],
            window_percentiles=_window(params),
            multipage=params["multipage"],
            compress_level=params["png_compress_level"],
            tag_keywords=tag_keywords(params["column_patterns"]),
            masks=masks,
            mask_png_path=png_path(masks[0][0]) if masks else "",
        )
        files[png] = FileTask(key=key, produce=task)
    workers = _workers(params["workers"], len(files), params["images_per_worker"])
    logger.info("Planned %d PNG conversions on up to %d worker(s)", len(files), workers)
    return StorePlan(
        files=files,
        workers=workers,
        tasks_per_worker=params["tasks_per_worker"],
        progress_seconds=float(params["progress_seconds"]),
    )


def collect_records(
    converted: StoredFiles, inventory: pd.DataFrame
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]], list[tuple[str, int]]]:
    """Join the store's records to the inventory.

    Returns:
        ``(good, bad, multipage)``: one row per ingested page (the inventory row with ``path``
        and the statistics); ``(source, reason, detail)`` per bad file; ``(source, pages)``
        per multi-page source of which only the first page was taken.

    Raises:
        ValueError: The store has no record of a planned conversion (it was not run).
    """
    records = converted.records
    by_path = {row["path"]: row for row in records.to_dict("records")} if len(records) else {}
    good: list[dict[str, Any]] = []
    bad: list[tuple[str, str, str]] = []
    first_only: list[tuple[str, int]] = []
    unrecorded: list[str] = []
    for row in inventory.to_dict("records"):
        rel = row.pop("source_path")
        row.pop(MASK_SOURCES, None)
        record = by_path.get(png_path(rel))
        if row["problem"]:
            bad.append((rel, row["problem"], ""))
        elif record is None or record.get("source_path") != rel:
            unrecorded.append(rel)
        elif not record["ok"]:
            bad.append((rel, str(record.get("error")), str(record.get("detail") or "")))
        else:
            pages = record["pages"]
            if record["n_pages"] > len(pages):
                first_only.append((rel, int(record["n_pages"])))
            for page in pages:
                stats = {column: page[column] for column in STAT_COLUMNS}
                tags = {TAGS_FIELD: record.get("tags") or {}}
                mask = record.get("mask_path") if page["page"] == 0 else ""
                mask = mask if isinstance(mask, str) else ""  # NaN: a record without masks
                good.append(
                    {"source_path": rel, **row, "path": page["path"], **stats, **tags}
                    | {MASK_PATH: mask}
                )
    if unrecorded:
        raise ValueError(
            f"intermediate_images has no conversion record for {len(unrecorded)} indexed "
            f"image(s) (first: {unrecorded[0]!r}); run the whole ingestion pipeline: "
            "kedro run --pipelines=ingestion"
        )
    return good, bad, first_only


def report_bad_files(bad: list[tuple[str, str, str]], n_files: int, params: dict) -> pd.DataFrame:
    """Stop on the bad files (``on_bad_file: fail``) or log them; the rejected-files table.

    Raises:
        BadFilesError: Bad files were found and ``on_bad_file`` is ``fail``.
    """
    if bad and params["on_bad_file"] == "fail":
        listing = "\n".join(f"  {rel}: {reason}" for rel, reason, _ in bad)
        raise BadFilesError(
            f"{len(bad)} of {n_files} files in ingestion.source_dir cannot be "
            f"ingested:\n{listing}\nFix or remove them, exclude them with ingestion.exclude, "
            "or set ingestion.on_bad_file: skip to ingest the rest and list these in "
            "data/02_intermediate/rejected_files.csv"
        )
    if bad:
        reasons = pd.Series([reason for _, reason, _ in bad]).value_counts()
        logger.warning(
            "Skipped %d bad file(s) (%s); see data/02_intermediate/rejected_files.csv",
            len(bad),
            ", ".join(f"{reason}: {n}" for reason, n in reasons.items()),
        )
    return pd.DataFrame(bad, columns=REJECTED_COLUMNS)


def warn_first_pages(first_only: list[tuple[str, int]]) -> None:
    """Name the multi-page sources of which only the first page was ingested."""
    if not first_only:
        return
    shown = ", ".join(f"{rel} ({n} pages)" for rel, n in first_only[:10])
    more = f" and {len(first_only) - 10} more" if len(first_only) > 10 else ""
    logger.warning(
        "%d file(s) hold several pages/frames; only the first page of each was ingested "
        "(ingestion.multipage: first; 'all' ingests every page as its own row, 'error' "
        "rejects them): %s%s",
        len(first_only),
        shown,
        more,
    )


def png_path(rel: str) -> str:
    """The PNG's path: the source path, with ``.png`` appended unless it is a PNG already."""
    return rel if rel.lower().endswith(".png") else f"{rel}.png"


def page_path(rel: str, page: int) -> str:
    """The PNG of page ``page`` of a multi-page source: ``<source>.page<k>.png``."""
    stem = rel[:-4] if rel.lower().endswith(".png") else rel
    return f"{stem}.page{page}.png"


def _statistics(pixels: Any) -> dict[str, Any]:
    return {
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        "channels": int(pixels.shape[2]),
        "sha256": pixel_sha256(pixels),
        "mean": float(pixels.mean()),
        "std": float(pixels.std()),
    }


@functools.cache
def _decoder_fingerprint() -> str:
    """A hash of the decoder's code: converted PNGs are redone when ``imaging.py`` changes."""
    return hashlib.sha256(Path(imaging.__file__).read_bytes()).hexdigest()[:16]


def _window(params: dict) -> tuple[float, float]:
    low, high = params["window_percentiles"]
    return float(low), float(high)


def _settings_fingerprint(params: dict) -> str:
    settings = (
        CONVERSION_VERSION,
        params["color_mode"],
        params["max_pixels"],
        params["max_decoded_bytes"],
        _window(params),
        params["multipage"],
        params["png_compress_level"],
        tag_keywords(params["column_patterns"]),
        _decoder_fingerprint(),
    )
    return hashlib.sha256(repr(settings).encode()).hexdigest()[:16]


def _task_key(sources: list[tuple[str, Callable[[], bytes]]], settings: str) -> str | None:
    """The files' paths, sizes and modification times and the settings; None if one is unknown."""
    parts = []
    for rel, loader in sources:
        size, mtime = getattr(loader, "size", None), getattr(loader, "mtime_ns", None)
        if size is None or mtime is None:
            return None
        parts.append(f"{rel}|{size}|{mtime}")
    return "|".join([*parts, settings])


def _workers(setting: int | str, n_jobs: int, images_per_worker: int) -> int:
    """``auto``: one process per core, with at least ``images_per_worker`` images each."""
    if setting != "auto":
        return int(setting)
    return available_cores(n_jobs // images_per_worker or 1)
