"""Ingestion: a folder of images in any common layout → PNGs and a manifest with splits.

The source folder arrives as ``{path relative to ingestion.source_dir: loader}``, where each
loader returns the file's bytes when called and (from ``ImageFolderDataset``) carries the file's
``size`` and ``mtime_ns``. The nodes are pure: the conversion node returns a *plan* (one small,
picklable task per image) and the ``intermediate_images`` dataset runs it — in parallel,
skipping sources that did not change since they were converted, writing each PNG atomically as
soon as it is ready (see ``breast_cancer_pipeline.datasets.image_store``).

Steps: :func:`index_source` (labels, groups, provider splits) → :func:`plan_conversion` →
:func:`collect_conversion` (statistics, bad files) → :func:`collapse_duplicates` →
:func:`split_manifest`.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import io
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline import imaging
from breast_cancer_pipeline.imaging import (
    ImageDecodeError,
    decode_image,
    encode_png,
    is_image_name,
    pixel_sha256,
)
from breast_cancer_pipeline.manifest import MANIFEST_COLUMNS, SPLITS

if TYPE_CHECKING:  # the datasets package imports kedro-mlflow: not needed to list pipelines
    from breast_cancer_pipeline.datasets.image_store import StoredFiles, StorePlan

logger = logging.getLogger(__name__)

#: Folder names (and CSV split values) that mark a provider's split, mapped to ours.
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
LAYOUTS = ("auto", "class_folders", "presplit", "csv")
INVENTORY_COLUMNS = ["source_path", "label", "group", "split", "problem"]
DUPLICATE_COLUMNS = ["sha256", "kind", "label", "source_path", "kept_source_path"]
#: Bump when the conversion's output changes for the same source and settings (new statistics,
#: another PNG encoding): every image is then converted again on the next run.
CONVERSION_VERSION = 1


class BadFilesError(ValueError):
    """One or more source files cannot be ingested; the message lists every one."""


# ------------------------------------------------------------------------------ nodes


def index_source(raw_files: Mapping[str, Callable[[], bytes]], params: dict) -> pd.DataFrame:
    """List the images of the source with their label, group and provider split.

    Layouts (``ingestion.layout``): ``class_folders`` (label = parent folder, or
    ``label_pattern``), ``presplit`` (``train/``, ``val|valid|validation/``, ``test/``, each
    holding class folders), ``csv`` (a CSV/parquet table naming each image, see
    ``ingestion.csv``) or ``auto``: ``csv`` when ``ingestion.csv.path`` is set, else
    ``presplit`` when the top folders are split names, else ``class_folders``.

    Args:
        raw_files: ``{path relative to ingestion.source_dir: loader}``.
        params: The ``ingestion`` parameters.

    Returns:
        One row per image: ``source_path``, ``label``, ``group``, ``split`` (the provider's
        split, else empty) and ``problem`` (why the row cannot be ingested, e.g. a file the
        CSV lists but the folder lacks; empty when fine).

    Raises:
        ValueError: A parameter is invalid, the CSV does not fit the parameters, or no image
            was found (the message says where and which parameters decide it).
    """
    _check_params(params)
    layout = _layout(raw_files, params)
    if layout == "csv":
        inventory = _index_csv(raw_files, params)
    else:
        inventory = _index_folders(raw_files, params, presplit=layout == "presplit")
    if inventory.empty:
        raise ValueError(
            f"no images found in ingestion.source_dir ({len(raw_files)} files seen, layout "
            f"{layout!r}). Images are files with an image extension in class folders (or the "
            "rows of ingestion.csv.path); check ingestion.source_dir, ingestion.layout, "
            "ingestion.include and ingestion.exclude"
        )
    counts = inventory["label"].value_counts().sort_index()
    logger.info(
        "Found %d images (%s layout) in %d classes (%s), %d groups",
        len(inventory),
        layout,
        len(counts),
        ", ".join(f"{k}: {v}" for k, v in counts.items()),
        inventory["group"].nunique(),
    )
    return inventory


def plan_conversion(
    raw_files: Mapping[str, Callable[[], bytes]], inventory: pd.DataFrame, params: dict
) -> StorePlan:
    """Plan the PNG conversion of every indexed image; the image store carries it out.

    Each task decodes one source with :func:`breast_cancer_pipeline.imaging.decode_image` (the
    decoder serving uses) and encodes it as lossless PNG. Its key is the source path, size and
    modification time plus the conversion settings and the decoder's code, so the store skips
    a source that is unchanged and was converted with the same settings and decoder.

    Args:
        raw_files: ``{relative path: loader}`` of the source folder.
        inventory: Output of :func:`index_source`.
        params: The ``ingestion`` parameters.

    Returns:
        The plan: ``{PNG path: task}`` and the number of worker processes.

    Raises:
        ValueError: Two sources would be converted to the same PNG path.
    """
    from breast_cancer_pipeline.datasets.image_store import FileTask, StorePlan  # noqa: PLC0415

    settings = _settings_fingerprint(params)
    files: dict[str, FileTask] = {}
    owner: dict[str, str] = {}
    for rel in inventory.loc[inventory["problem"] == "", "source_path"]:
        png = _png_path(rel)
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
            color_mode=params["color_mode"],
            max_pixels=params["max_pixels"],
            compress_level=int(params.get("png_compress_level", 6)),
        )
        files[png] = FileTask(key=key, produce=task)
    workers = _workers(params.get("workers", "auto"), len(files))
    logger.info("Planned %d PNG conversions on up to %d worker(s)", len(files), workers)
    return StorePlan(files=files, workers=workers)


def collect_conversion(
    converted: StoredFiles, inventory: pd.DataFrame, params: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join the conversion records to the inventory; stop on or report the bad files.

    Every source has been tried before this node runs, so one message lists every bad file.

    Args:
        converted: The ``intermediate_images`` store, with its conversion records.
        inventory: Output of :func:`index_source`.
        params: The ``ingestion`` parameters.

    Returns:
        ``(image_info, rejected)``: the inventory of the good images with ``path`` (the PNG),
        ``width``, ``height``, ``channels``, ``sha256``, ``mean`` and ``std``; and the bad
        files with ``path`` (the source), ``reason`` and ``detail``.

    Raises:
        BadFilesError: Bad files were found and ``on_bad_file`` is ``fail``.
        ValueError: The store has no record of a planned conversion (it was not run).
    """
    records = converted.records
    by_path = {row["path"]: row for row in records.to_dict("records")} if len(records) else {}
    bad: list[tuple[str, str, str]] = []
    good: list[dict[str, Any]] = []
    unrecorded: list[str] = []
    for row in inventory.to_dict("records"):
        rel = row["source_path"]
        if row["problem"]:
            bad.append((rel, row["problem"], ""))
            continue
        record = by_path.get(_png_path(rel))
        if record is None or record.get("source_path") != rel:
            unrecorded.append(rel)
        elif not record["ok"]:
            bad.append((rel, str(record.get("error")), str(record.get("detail") or "")))
        else:
            stats = {k: record[k] for k in ("width", "height", "channels", "sha256", "mean", "std")}
            good.append({**row, "path": _png_path(rel), **stats})
    if unrecorded:
        raise ValueError(
            f"intermediate_images has no conversion record for {len(unrecorded)} indexed "
            f"image(s) (first: {unrecorded[0]!r}); run the whole ingestion pipeline: "
            "kedro run --pipelines=ingestion"
        )
    if bad and params["on_bad_file"] == "fail":
        listing = "\n".join(f"  {rel}: {reason}" for rel, reason, _ in bad)
        raise BadFilesError(
            f"{len(bad)} of {len(inventory)} files in ingestion.source_dir cannot be "
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
    if not good:
        raise BadFilesError(f"none of the {len(inventory)} images could be ingested")
    info = pd.DataFrame(good).drop(columns=["problem"])
    info = info.astype({"width": int, "height": int, "channels": int})
    rejected = pd.DataFrame(bad, columns=["path", "reason", "detail"])
    return info, rejected


def collapse_duplicates(image_info: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep one row per identical image and label; report images that carry two labels.

    Identical means the same ``sha256`` of the decoded pixels (so a PNG and a JPEG-free
    re-export of it, or one file copied into two folders, match). Copies under one label
    collapse to the first by ``source_path``; the kept row lists the others in ``duplicates``.
    An image under two labels (a *conflict*) keeps all its rows, so the validation gate's
    ``sha256_in_one_label`` check sees it and stops the run.

    Args:
        image_info: Output of :func:`collect_conversion`.

    Returns:
        ``(image_info, report)``: one row per distinct (image, label) with a ``duplicates``
        column (``;``-separated source paths, empty when none); and one report row per
        dropped copy (``kind`` ``duplicate``) and per row of a conflict (``conflict``).
    """
    info = image_info.sort_values("source_path").reset_index(drop=True)
    info["duplicates"] = ""
    report: list[dict[str, str]] = []
    drop: list[int] = []
    for (sha, label), rows in info.groupby(["sha256", "label"], sort=True):
        if len(rows) < 2:
            continue
        kept, copies = rows.index[0], rows.index[1:]
        info.loc[kept, "duplicates"] = ";".join(info.loc[copies, "source_path"])
        drop.extend(copies)
        for index in copies:
            report.append(
                {
                    "sha256": sha,
                    "kind": "duplicate",
                    "label": label,
                    "source_path": info.loc[index, "source_path"],
                    "kept_source_path": info.loc[kept, "source_path"],
                }
            )
    info = info.drop(index=drop)
    conflicts = info[info.groupby("sha256")["label"].transform("nunique") > 1]
    for row in conflicts.sort_values(["sha256", "label"]).to_dict("records"):
        report.append(
            {
                "sha256": row["sha256"],
                "kind": "conflict",
                "label": row["label"],
                "source_path": row["source_path"],
                "kept_source_path": row["source_path"],
            }
        )
    if drop:
        logger.warning(
            "Collapsed %d exact duplicate image(s) under the same label (listed in the "
            "manifest's duplicates column and data/02_intermediate/duplicates.csv)",
            len(drop),
        )
    if len(conflicts):
        examples = "; ".join(
            " = ".join(f"{r.source_path} ({r.label})" for r in rows.head(3).itertuples())
            for _, rows in list(conflicts.groupby("sha256"))[:5]
        )
        logger.error(
            "%d identical image(s) carry different labels (conflicts): %s. They are kept, so "
            "the validation gate (sha256_in_one_label) stops the run; see "
            "data/02_intermediate/duplicates.csv and fix the labels or exclude one copy with "
            "ingestion.exclude",
            conflicts["sha256"].nunique(),
            examples,
        )
    return info.reset_index(drop=True), pd.DataFrame(report, columns=DUPLICATE_COLUMNS)


def split_manifest(image_info: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Assign every image to train/val/test, grouped by patient and stratified by label.

    A provider's split (pre-split folders or ``ingestion.csv.split_column``) is kept.
    Otherwise each group goes wholly to one split, so no patient spans two; groups are drawn
    per label so every class is spread by the configured ratios. With two ratios
    ``[train, test]`` the validation split is taken from train (``split.val_from_train`` of
    its groups).

    Args:
        image_info: Output of :func:`collapse_duplicates`.
        params: The ``ingestion`` parameters.

    Returns:
        The manifest: one row per image, sorted by ``path`` (columns in README.md).
    """
    split_params = params["split"]
    manifest = image_info.copy()
    if "duplicates" not in manifest:
        manifest["duplicates"] = ""
    if (manifest["split"] != "").all():
        manifest["split_origin"] = "provider"
    else:
        rng = np.random.default_rng(split_params["seed"])
        ratios = _split_ratios(split_params)
        group_label = manifest.groupby("group")["label"].agg(lambda s: s.mode().iloc[0])
        assignment: dict[str, str] = {}
        for label in sorted(group_label.unique()):
            groups = np.array(sorted(group_label.index[group_label == label]))
            rng.shuffle(groups)
            counts = _allocate(len(groups), ratios)
            start = 0
            for split, count in zip(SPLITS, counts, strict=True):
                assignment.update(dict.fromkeys(groups[start : start + count], split))
                start += count
        manifest["split"] = manifest["group"].map(assignment)
        manifest["split_origin"] = "seeded"
    manifest = manifest.sort_values("path").reset_index(drop=True)
    counts = manifest.groupby(["split", "label"]).size().unstack(fill_value=0)
    logger.info("Split (images per class):\n%s", counts.to_string())
    return manifest[list(MANIFEST_COLUMNS)]


# ------------------------------------------------------------------------------ conversion


@dataclass(frozen=True)
class ConvertToPng:
    """Decode one source image with the shared decoder and encode it as lossless PNG.

    Runs in a worker process of the image store: it must stay picklable and return only the
    PNG bytes and a small JSON-serialisable record.
    """

    load: Callable[[], bytes]
    name: str
    color_mode: str
    max_pixels: int | None
    compress_level: int = 6

    def __call__(self) -> tuple[bytes | None, dict[str, Any]]:
        """Convert the image.

        Returns:
            ``(png, record)``: on success the PNG bytes and the statistics (``width``,
            ``height``, ``channels``, ``sha256``, ``mean``, ``std``); for a bad file ``None``
            and ``error`` (a short reason) with ``detail`` (the full message and its fix).
        """
        record: dict[str, Any] = {"source_path": self.name}
        try:
            data = self.load()
        except OSError as exc:
            return None, {**record, "error": "cannot read file", "detail": str(exc)}
        try:
            pixels = decode_image(
                data, self.name, color_mode=self.color_mode, max_pixels=self.max_pixels
            )
        except ImageDecodeError as exc:
            return None, {**record, "error": exc.reason, "detail": str(exc)}
        record.update(
            width=int(pixels.shape[1]),
            height=int(pixels.shape[0]),
            channels=int(pixels.shape[2]),
            sha256=pixel_sha256(pixels),
            mean=float(pixels.mean()),
            std=float(pixels.std()),
        )
        return encode_png(pixels, compress_level=self.compress_level), record


@functools.cache
def _decoder_fingerprint() -> str:
    """A hash of the decoder's code: converted PNGs are redone when ``imaging.py`` changes."""
    return hashlib.sha256(Path(imaging.__file__).read_bytes()).hexdigest()[:16]


def _settings_fingerprint(params: dict) -> str:
    settings = (
        CONVERSION_VERSION,
        params["color_mode"],
        params["max_pixels"],
        int(params.get("png_compress_level", 6)),
        _decoder_fingerprint(),
    )
    return hashlib.sha256(repr(settings).encode()).hexdigest()[:16]


def _png_path(rel: str) -> str:
    """The PNG's path: the source path, with ``.png`` appended unless it is a PNG already."""
    return rel if rel.lower().endswith(".png") else f"{rel}.png"


# ------------------------------------------------------------------------------ layouts


def _layout(raw_files: Mapping[str, Any], params: dict) -> str:
    layout = params.get("layout", "auto")
    if layout not in LAYOUTS:
        raise ValueError(f"ingestion.layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    csv_path = (params.get("csv") or {}).get("path")
    if layout == "csv" and not csv_path:
        raise ValueError(
            "ingestion.layout is 'csv' but ingestion.csv.path is not set; give the CSV or "
            "parquet file (relative to ingestion.source_dir), e.g. "
            "--params ingestion.csv.path=labels.csv"
        )
    if layout == "csv" or (layout == "auto" and csv_path):
        return "csv"
    tops = {
        PurePosixPath(rel).parts[0].lower()
        for rel in raw_files
        if len(PurePosixPath(rel).parts) > 2 and _selected(rel, params)
    }
    looks_presplit = bool(tops) and tops <= set(SPLIT_FOLDERS) and "train" in tops
    if layout == "presplit" and not looks_presplit:
        raise ValueError(
            "ingestion.layout is 'presplit' but the top folders of ingestion.source_dir are "
            f"{sorted(tops)}; expected train/, val/ (or valid/, validation/) and test/"
        )
    if layout == "auto":
        return "presplit" if looks_presplit else "class_folders"
    return layout


def _index_folders(raw_files: Mapping[str, Any], params: dict, *, presplit: bool) -> pd.DataFrame:
    label_pattern = _compile(params.get("label_pattern"), "ingestion.label_pattern")
    group_pattern = _compile(params.get("group_pattern"), "ingestion.group_pattern")
    label_map = params.get("label_map") or {}
    rows, ignored = [], []
    for rel in sorted(raw_files):
        if not _selected(rel, params):
            ignored.append(rel)
            continue
        parts = PurePosixPath(rel).parts
        split = SPLIT_FOLDERS[parts[0].lower()] if presplit else ""
        label = _label(rel, parts[1:] if presplit else parts, label_pattern)
        if label is None:
            ignored.append(rel)
            continue
        label = str(label_map.get(label, label))
        rows.append((rel, label, _group(rel, group_pattern), split, ""))
    if ignored:
        logger.info(
            "Ignored %d file(s) that are not images, are excluded (masks) or have no label "
            "(e.g. %s)",
            len(ignored),
            ", ".join(repr(r) for r in ignored[:3]),
        )
    return pd.DataFrame(rows, columns=INVENTORY_COLUMNS)


def _index_csv(raw_files: Mapping[str, Callable[[], bytes]], params: dict) -> pd.DataFrame:
    """Rows of the CSV/parquet table(s) named by ``ingestion.csv``."""
    csv = params.get("csv") or {}
    pattern = _clean_path(csv["path"])
    tables = sorted(rel for rel in raw_files if rel == pattern or fnmatch.fnmatch(rel, pattern))
    if not tables:
        raise ValueError(
            f"ingestion.csv.path {csv['path']!r} matches no file in ingestion.source_dir; give "
            "a path (or glob) relative to ingestion.source_dir, e.g. 'labels.csv' or "
            "'*_case_description_*.csv'"
        )
    path_col = csv.get("path_column")
    if not path_col:
        raise ValueError("ingestion.csv.path_column must name the column of image paths")
    label_col, group_col, split_col = (
        csv.get("label_column"),
        csv.get("group_column"),
        csv.get("split_column"),
    )
    label_pattern = _compile(params.get("label_pattern"), "ingestion.label_pattern")
    group_pattern = _compile(params.get("group_pattern"), "ingestion.group_pattern")
    label_map = params.get("label_map") or {}

    entries: dict[str, dict[str, Any]] = {}
    conflicts: dict[str, set[str]] = {}
    for table_name in tables:
        table = _read_table(table_name, raw_files[table_name]())
        wanted = {
            "ingestion.csv.path_column": path_col,
            "ingestion.csv.label_column": label_col,
            "ingestion.csv.group_column": group_col,
            "ingestion.csv.split_column": split_col,
        }
        for parameter, column in wanted.items():
            if column and column not in table.columns:
                raise ValueError(
                    f"{parameter} is {column!r} but {table_name} has no such column; its "
                    f"columns are {list(table.columns)}"
                )
        for number, row in enumerate(table.to_dict("records"), start=2):
            where = f"{table_name} line {number}"
            rel = _clean_path(row[path_col])
            if not rel:
                continue
            if not _selected(rel, params, need_image_name=False):
                continue
            label = (
                _cell(row, label_col)
                if label_col
                else _label(rel, PurePosixPath(rel).parts, label_pattern)
            )
            group = _cell(row, group_col) if group_col else _group(rel, group_pattern)
            split = ""
            if split_col:
                value = _cell(row, split_col)
                split = SPLIT_FOLDERS.get(value.lower(), "")
                if not split:
                    raise ValueError(
                        f"{where}: ingestion.csv.split_column {split_col!r} is {value!r}; "
                        f"expected one of {sorted(SPLIT_FOLDERS)} (case-insensitive)"
                    )
            problem = ""
            if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
                problem = f"{where}: the path must be relative to ingestion.source_dir"
            elif rel not in raw_files:
                problem = f"{where}: listed but not found under ingestion.source_dir"
            elif not label:
                problem = f"{where}: no label"
            elif not group:
                problem = f"{where}: empty {group_col!r} (patient/group id)"
            label = str(label_map.get(label, label)) if label else ""
            entry = {"label": label, "group": group, "split": split, "problem": problem}
            if rel in entries and entries[rel]["label"] != label:
                conflicts.setdefault(rel, {entries[rel]["label"]}).add(label)
            entries.setdefault(rel, entry)
    _resolve_csv_conflicts(entries, conflicts, csv.get("label_priority"))
    rows = [
        (rel, e["label"], e["group"], e["split"], e["problem"])
        for rel, e in sorted(entries.items())
    ]
    inventory = pd.DataFrame(rows, columns=INVENTORY_COLUMNS)
    missing = int((inventory["problem"] != "").sum())
    if missing:
        logger.warning("%d row(s) of %s cannot be ingested (see below)", missing, tables)
    return inventory


def _resolve_csv_conflicts(
    entries: dict[str, dict[str, Any]], conflicts: dict[str, set[str]], priority: list | None
) -> None:
    """One label per image: the first of ``label_priority`` wins, else it is an error."""
    if not conflicts:
        return
    order = [str(label) for label in priority or []]
    unresolved = {rel: labels for rel, labels in conflicts.items() if not labels & set(order)}
    if unresolved:
        listing = "\n".join(
            f"  {rel}: {sorted(labels)}" for rel, labels in list(sorted(unresolved.items()))[:10]
        )
        raise ValueError(
            f"{len(unresolved)} image(s) appear in the CSV with different labels:\n{listing}\n"
            "Set ingestion.csv.label_priority to say which label wins, e.g. "
            "[MALIGNANT, BENIGN] (after ingestion.label_map), or fix the CSV"
        )
    for rel, labels in conflicts.items():
        entries[rel]["label"] = next(label for label in order if label in labels)


def _read_table(name: str, data: bytes) -> pd.DataFrame:
    try:
        if name.lower().endswith((".parquet", ".pq")):
            table = pd.read_parquet(io.BytesIO(data))
            return table.astype({c: str for c in table.columns})
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - report any parser error with the file name
        raise ValueError(
            f"cannot read ingestion.csv.path file {name!r} as CSV/parquet: {exc}"
        ) from exc


def _cell(row: Mapping[str, Any], column: str) -> str:
    value = row[column]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def _clean_path(value: Any) -> str:
    text = "" if value is None else str(value).strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


# ------------------------------------------------------------------------------ helpers


def _check_params(params: dict) -> None:
    if params.get("color_mode") not in {"grayscale", "rgb"}:
        raise ValueError(
            f"ingestion.color_mode must be 'grayscale' or 'rgb', got {params.get('color_mode')!r}"
        )
    if params.get("on_bad_file") not in {"fail", "skip"}:
        raise ValueError(
            f"ingestion.on_bad_file must be 'fail' or 'skip', got {params.get('on_bad_file')!r}"
        )
    max_pixels = params.get("max_pixels")
    if max_pixels is not None and (not isinstance(max_pixels, int) or max_pixels < 1):
        raise ValueError(f"ingestion.max_pixels must be a positive integer, got {max_pixels!r}")
    level = params.get("png_compress_level", 6)
    if not isinstance(level, int) or not 0 <= level <= 9:
        raise ValueError(f"ingestion.png_compress_level must be 0-9, got {level!r}")
    _split_ratios(params["split"])


def _split_ratios(split_params: dict) -> tuple[float, float, float]:
    """Validated ``(train, val, test)`` fractions from ``split.ratios``."""
    ratios = split_params.get("ratios")
    if (
        not isinstance(ratios, list | tuple)
        or len(ratios) not in {2, 3}
        or not all(isinstance(r, int | float) and r > 0 for r in ratios)
        or abs(sum(ratios) - 1.0) > 1e-6
    ):
        raise ValueError(
            "ingestion.split.ratios must be two or three positive numbers that sum to 1, "
            f"e.g. [0.7, 0.3] or [0.8, 0.1, 0.1]; got {ratios!r}"
        )
    if len(ratios) == 3:
        return float(ratios[0]), float(ratios[1]), float(ratios[2])
    val_share = float(split_params.get("val_from_train", 0.15))
    if not 0 < val_share < 1:
        raise ValueError(f"ingestion.split.val_from_train must be in (0, 1), got {val_share}")
    train, test = float(ratios[0]), float(ratios[1])
    return train * (1 - val_share), train * val_share, test


def _allocate(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Split ``n`` items by ``ratios``, giving every split at least one item when n ≥ 3."""
    counts = [int(np.floor(n * r)) for r in ratios]
    order = np.argsort([-(n * r - c) for r, c in zip(ratios, counts, strict=True)])
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    if n >= len(ratios):
        for i in range(len(counts)):
            if counts[i] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[i] = 1
    return counts


def _compile(pattern: str | None, parameter: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{parameter} is not a valid regular expression: {exc}") from exc
    if compiled.groups != 1:
        raise ValueError(f"{parameter} must have exactly one capture group, got {pattern!r}")
    return compiled


def _selected(rel: str, params: dict, *, need_image_name: bool = True) -> bool:
    name = PurePosixPath(rel).name
    if name.startswith("."):
        return False
    include = params.get("include")
    if include:
        return any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in include)
    if need_image_name and not is_image_name(name):
        return False
    return not any(
        fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in params.get("exclude") or []
    )


def _label(rel: str, parts: tuple[str, ...], pattern: re.Pattern[str] | None) -> str | None:
    if pattern is not None:
        match = pattern.search(rel)
        return match.group(1) if match else None
    return parts[-2] if len(parts) >= 2 else None


def _group(rel: str, pattern: re.Pattern[str] | None) -> str:
    if pattern is not None:
        match = pattern.search(rel)
        if match:
            return match.group(1)
    return rel


def _workers(setting: int | str, n_jobs: int) -> int:
    if setting == "auto":
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, min(count or 1, n_jobs // 16 or 1))
    if not isinstance(setting, int) or setting < 1:
        raise ValueError(f"ingestion.workers must be 'auto' or a positive integer, got {setting!r}")
    return setting
