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

import pandas as pd

from breast_cancer_pipeline import imaging
from breast_cancer_pipeline.cluster import available_cores
from breast_cancer_pipeline.columns import dicom_tags, read_dicom_header, tag_keywords
from breast_cancer_pipeline.file_records import FileTask, StoredFiles, StorePlan
from breast_cancer_pipeline.imaging import ImageDecodeError, decode_pages, encode_png, pixel_sha256
from breast_cancer_pipeline.manifest import NUMERIC_COLUMNS, REQUIRED_COLUMNS

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

    def __call__(self) -> tuple[dict[str, bytes] | None, dict[str, Any]]:
        """Convert the image.

        Returns:
            ``(pngs, record)``: on success ``{PNG path: bytes}`` (one per page under
            ``multipage: all``, else one) and a record with ``n_pages``, ``pages`` (each
            page's ``path``, ``page`` and statistics) and ``tags`` (the ``tag_keywords`` a
            DICOM header holds, ``{}`` for other formats); for a bad file ``None`` and ``error``
            (a short reason) with ``detail`` (the message and its fix).
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
        return pngs, record


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
    for rel in inventory.loc[inventory["problem"] == "", "source_path"]:
        png = png_path(rel)
        if png in owner:
            raise ValueError(
                f"{owner[png]!r} and {rel!r} would both be stored as {png!r}; rename one of "
                "them or exclude it with ingestion.exclude"
            )
        owner[png] = rel
        loader = raw_files[rel]
        size, mtime = getattr(loader, "size", None), getattr(loader, "mtime_ns", None)
        key = None if size is None or mtime is None else f"{rel}|{size}|{mtime}|{settings}"
        task = ConvertToPng(
            load=loader,
            name=rel,
            png_path=png,
            color_mode=params["color_mode"],
            max_pixels=params["max_pixels"],
            max_decoded_bytes=params["max_decoded_bytes"],
            window_percentiles=_window(params),
            multipage=params["multipage"],
            compress_level=params["png_compress_level"],
            tag_keywords=tag_keywords(params["column_patterns"]),
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
                good.append({"source_path": rel, **row, "path": page["path"], **stats, **tags})
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


def _workers(setting: int | str, n_jobs: int, images_per_worker: int) -> int:
    """``auto``: one process per core, with at least ``images_per_worker`` images each."""
    if setting != "auto":
        return int(setting)
    return available_cores(n_jobs // images_per_worker or 1)
