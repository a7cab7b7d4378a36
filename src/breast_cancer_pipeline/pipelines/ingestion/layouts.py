"""Which files of the source are images, and their label, group and provider split.

Layouts (``ingestion.layout``): ``class_folders`` (label = parent folder, or ``label_pattern``),
``presplit`` (``train/``, ``val|valid|validation/``, ``test/``, each holding class folders),
``csv`` (a table naming each image: :mod:`.csv_tables`) or ``auto``: ``csv`` when
``ingestion.csv.path`` is set, else ``presplit`` when the top folders are split names, else
``class_folders``.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

from breast_cancer_pipeline.imaging import is_image_name
from breast_cancer_pipeline.manifest import SPLITS

logger = logging.getLogger(__name__)

#: Folder names (and CSV split values) that mark a provider's split, mapped to ours.
SPLIT_FOLDERS = {
    **{split: split for split in SPLITS},
    "training": "train",
    "valid": "val",
    "validation": "val",
    "testing": "test",
}
#: Columns of the inventory (one row per indexed file).
INVENTORY_COLUMNS = ["source_path", "label", "group", "split", "problem"]


def detect_layout(raw_files: Mapping[str, Any], params: dict) -> str:
    """The layout in effect: ``csv``, ``presplit`` or ``class_folders``.

    Raises:
        ValueError: ``ingestion.layout`` is ``presplit`` but the folders are not split names.
    """
    layout = params["layout"]
    if layout == "csv" or (layout == "auto" and params["csv"]["path"]):
        return "csv"
    tops = {
        PurePosixPath(rel).parts[0].lower()
        for rel in raw_files
        if len(PurePosixPath(rel).parts) > 2 and selected(rel, params)
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


def index_folders(raw_files: Mapping[str, Any], params: dict, *, presplit: bool) -> pd.DataFrame:
    """One inventory row per selected image of a ``class_folders`` or ``presplit`` source."""
    label_pattern = compile_pattern(params["label_pattern"])
    group_pattern = compile_pattern(params["group_pattern"])
    label_map = params["label_map"]
    rows, ignored = [], []
    for rel in sorted(raw_files):
        if not selected(rel, params):
            ignored.append(rel)
            continue
        parts = PurePosixPath(rel).parts
        split = SPLIT_FOLDERS[parts[0].lower()] if presplit else ""
        label = label_of(rel, parts[1:] if presplit else parts, label_pattern)
        if label is None:
            ignored.append(rel)
            continue
        label = str(label_map.get(label, label))
        rows.append((rel, label, group_of(rel, group_pattern), split, ""))
    if ignored:
        logger.info(
            "Ignored %d file(s) that are not images, are excluded (masks) or have no label "
            "(e.g. %s)",
            len(ignored),
            ", ".join(repr(r) for r in ignored[:3]),
        )
    return pd.DataFrame(rows, columns=INVENTORY_COLUMNS)


def refused_link_rows(
    raw_files: Mapping[str, Any], params: dict, indexed: set[str]
) -> pd.DataFrame:
    """Inventory rows (with their ``problem``) for symbolic links that lead outside the source.

    The folder listing neither lists nor reads them (``ImageFolderDataset``); each link to a
    folder, or to a file ingestion would take, becomes a bad file with the reason. Paths in
    ``indexed`` (rows of a CSV, which carry the reason already) are left out.
    """
    refused: Mapping[str, str] = getattr(raw_files, "refused_links", {})
    folders = getattr(raw_files, "folder_links", frozenset())
    rows = [
        (rel, "", rel, "", link_problem(target, params))
        for rel, target in sorted(refused.items())
        if rel not in indexed and (rel in folders or selected(rel, params))
    ]
    return pd.DataFrame(rows, columns=INVENTORY_COLUMNS)


def link_problem(target: str, params: dict) -> str:
    """Why a symbolic link to ``target``, outside the source, is not ingested."""
    fix = (
        "the folder listing (catalog raw_images) did not follow it: give raw_images "
        "follow_external_links: true too"
        if params["follow_external_links"]
        else "set ingestion.follow_external_links: true to ingest what it leads to"
    )
    return f"symbolic link to {target!r}, outside ingestion.source_dir; {fix}"


def selected(rel: str, params: dict, *, need_image_name: bool = True) -> bool:
    """Whether ``rel`` is taken in.

    Hidden files and folders never are; then ``include`` (when set) decides alone; otherwise
    an image name (unless ``need_image_name`` is false) that no ``exclude`` glob matches.
    """
    path = PurePosixPath(rel)
    if any(part.startswith(".") and part not in (".", "..") for part in path.parts):
        return False
    name = path.name
    if params["include"]:
        return any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in params["include"])
    if need_image_name and not is_image_name(name):
        return False
    return not any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in params["exclude"])


def compile_pattern(pattern: str | None) -> re.Pattern[str] | None:
    """The compiled ``label_pattern``/``group_pattern`` (checked by the parameter model)."""
    return re.compile(pattern) if pattern else None


def label_of(rel: str, parts: tuple[str, ...], pattern: re.Pattern[str] | None) -> str | None:
    """The pattern's group, else the parent folder; ``None`` when there is none."""
    if pattern is not None:
        match = pattern.search(rel)
        return match.group(1) if match else None
    return parts[-2] if len(parts) >= 2 else None


def group_of(rel: str, pattern: re.Pattern[str] | None) -> str:
    """The pattern's group, else the path itself (each image its own group)."""
    if pattern is not None:
        match = pattern.search(rel)
        if match:
            return match.group(1)
    return rel
