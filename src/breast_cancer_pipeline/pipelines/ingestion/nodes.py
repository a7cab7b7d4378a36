"""Ingestion: a folder of images in any common layout → PNGs and a manifest with splits.

Nodes receive the source folder as a mapping ``{relative path: load function}`` (a Kedro
``PartitionedDataset``) and return new objects; the catalog writes them.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.imaging import (
    ImageDecodeError,
    decode_image,
    encode_png,
    is_image_name,
    pixel_sha256,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Folder names that mark a provider's split, mapped to ours.
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
INVENTORY_COLUMNS = ["source_path", "label", "group", "split"]


class BadFilesError(ValueError):
    """One or more source files cannot be ingested; the message lists every one."""


def index_source(raw_files: Mapping[str, Callable[[], bytes]], params: dict) -> pd.DataFrame:
    """List the images of the source folder with their label, group and provider split.

    Args:
        raw_files: ``{path relative to ingestion.source_dir: load function}``.
        params: The ``ingestion`` parameters.

    Returns:
        One row per image file: ``source_path``, ``label``, ``group`` and ``split`` (the
        provider's split for pre-split folders, else empty).

    Raises:
        ValueError: A parameter is invalid, or no image was found (the message says where
            and which parameters decide what counts as an image).
    """
    _check_params(params)
    label_pattern = _compile(params.get("label_pattern"), "ingestion.label_pattern")
    group_pattern = _compile(params.get("group_pattern"), "ingestion.group_pattern")
    label_map = params.get("label_map") or {}
    presplit = _is_presplit(raw_files, params)

    rows = []
    for rel in sorted(raw_files):
        if not _selected(rel, params):
            continue
        parts = PurePosixPath(rel).parts
        split = SPLIT_FOLDERS[parts[0].lower()] if presplit else ""
        label = _label(rel, parts[1:] if presplit else parts, label_pattern)
        if label is None:
            continue
        label = str(label_map.get(label, label))
        group = _group(rel, group_pattern)
        rows.append((rel, label, group, split))
    if not rows:
        raise ValueError(
            f"no images found in ingestion.source_dir ({len(raw_files)} files seen). Images are "
            "files with an image extension in class folders; check ingestion.source_dir, "
            "ingestion.include and ingestion.exclude"
        )
    inventory = pd.DataFrame(rows, columns=INVENTORY_COLUMNS)
    logger.info(
        "Found %d images in %d classes (%s)",
        len(inventory),
        inventory["label"].nunique(),
        ", ".join(f"{k}: {v}" for k, v in inventory["label"].value_counts().sort_index().items()),
    )
    return inventory


def convert_images(
    raw_files: Mapping[str, Callable[[], bytes]], inventory: pd.DataFrame, params: dict
) -> tuple[dict[str, bytes], pd.DataFrame, pd.DataFrame]:
    """Decode every listed image with the shared decoder and re-encode it as PNG.

    The whole source is decoded first; then bad files either stop the run with one message
    that lists every one (``on_bad_file: fail``) or are reported and left out (``skip``).

    Args:
        raw_files: ``{relative path: load function}`` of the source folder.
        inventory: Output of :func:`index_source`.
        params: The ``ingestion`` parameters.

    Returns:
        ``(png_files, image_info, rejected)``: ``{png path: PNG bytes}`` for the
        intermediate folder; the inventory with ``path``, ``width``, ``height``,
        ``channels``, ``sha256``, ``mean`` and ``std`` added; the rejected files with reason.

    Raises:
        BadFilesError: Bad files were found and ``on_bad_file`` is ``fail``.
    """
    jobs = [
        (rel, raw_files[rel], params["color_mode"], params["max_pixels"])
        for rel in inventory["source_path"]
    ]
    workers = _workers(params.get("workers", "auto"), len(jobs))
    logger.info("Converting %d images to PNG with %d worker(s)", len(jobs), workers)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_convert_one, jobs, chunksize=max(1, len(jobs) // 64)))
    else:
        results = [_convert_one(job) for job in jobs]

    rejected = [(rel, error) for rel, error, _ in results if error]
    if rejected and params["on_bad_file"] == "fail":
        listing = "\n".join(f"  {rel}: {reason}" for rel, reason in rejected)
        raise BadFilesError(
            f"{len(rejected)} of {len(jobs)} files in ingestion.source_dir cannot be ingested:\n"
            f"{listing}\nFix or remove them, exclude them with ingestion.exclude, or set "
            "ingestion.on_bad_file: skip to ingest the rest and list these in "
            "data/02_intermediate/rejected_files.csv"
        )
    if rejected:
        logger.warning("Skipped %d bad files (see rejected_files.csv)", len(rejected))

    png_files: dict[str, bytes] = {}
    info_rows = []
    for rel, error, result in results:
        if error:
            continue
        png, stats = result
        path = _png_path(rel)
        png_files[path] = png
        info_rows.append({"source_path": rel, "path": path, **stats})
    info = inventory.merge(pd.DataFrame(info_rows), on="source_path", how="inner")
    rejected_df = pd.DataFrame(rejected, columns=["path", "reason"])
    return png_files, info, rejected_df


def split_manifest(image_info: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Assign every image to train/val/test, grouped by patient and stratified by label.

    A provider's split (pre-split folders) is kept. Otherwise each group goes wholly to one
    split, so no patient spans two; groups are drawn per label so every class is spread by
    the configured ratios. With two ratios ``[train, test]`` the validation split is taken
    from train (``split.val_from_train`` of its groups).

    Args:
        image_info: Output of :func:`convert_images`.
        params: The ``ingestion`` parameters.

    Returns:
        The manifest: one row per image, sorted by ``path``.
    """
    split_params = params["split"]
    manifest = image_info.copy()
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
    return manifest[
        [
            "path",
            "source_path",
            "label",
            "split",
            "group",
            "width",
            "height",
            "channels",
            "sha256",
            "mean",
            "std",
            "split_origin",
        ]
    ]


# ------------------------------------------------------------------------------ helpers


def _convert_one(
    job: tuple[str, Callable[[], bytes], str, int | None],
) -> tuple[str, str | None, Any]:
    rel, load, color_mode, max_pixels = job
    try:
        pixels = decode_image(load(), rel, color_mode=color_mode, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return rel, getattr(exc, "reason", None) or str(exc), None
    except OSError as exc:
        return rel, f"cannot read file: {exc}", None
    stats = {
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        "channels": int(pixels.shape[2]),
        "sha256": pixel_sha256(pixels),
        "mean": float(pixels.mean()),
        "std": float(pixels.std()),
    }
    return rel, None, (encode_png(pixels), stats)


def _png_path(rel: str) -> str:
    """The PNG's path: the source path, with ``.png`` appended unless it is a PNG already."""
    return rel if rel.lower().endswith(".png") else f"{rel}.png"


def _check_params(params: dict) -> None:
    if params.get("color_mode") not in {"grayscale", "rgb"}:
        raise ValueError(
            f"ingestion.color_mode must be 'grayscale' or 'rgb', got {params.get('color_mode')!r}"
        )
    if params.get("on_bad_file") not in {"fail", "skip"}:
        raise ValueError(
            f"ingestion.on_bad_file must be 'fail' or 'skip', got {params.get('on_bad_file')!r}"
        )
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


def _selected(rel: str, params: dict) -> bool:
    name = PurePosixPath(rel).name
    if name.startswith("."):
        return False
    include = params.get("include")
    if include:
        return any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in include)
    if not is_image_name(name):
        return False
    return not any(
        fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in params.get("exclude") or []
    )


def _is_presplit(raw_files: Mapping[str, Any], params: dict) -> bool:
    layout = params.get("layout", "auto")
    if layout not in {"auto", "class_folders", "presplit"}:
        raise ValueError(
            f"ingestion.layout must be one of auto, class_folders, presplit; got {layout!r}"
        )
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
    return layout == "presplit" or (layout == "auto" and looks_presplit)


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
