"""Layout ``csv``: a CSV or parquet table (or several, by glob) names the images.

Each row gives an image path relative to ``ingestion.source_dir`` (``csv.path_column``) and,
optionally, its label, patient/group, the provider's split, its lesion mask
(``csv.mask_column``; an image on several rows, one per lesion, gets every mask) and the
columns of ``csv.extra_columns`` (copied into the manifest). A path that leaves the folder,
a listed file that is missing, a row without label or group become inventory rows with a
``problem`` (bad files), so every one is reported at once.
"""

from __future__ import annotations

import fnmatch
import io
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.columns import clean_value

from .layouts import (
    INVENTORY_COLUMNS,
    SPLIT_FOLDERS,
    compile_pattern,
    group_of,
    label_of,
    link_problem,
    selected,
)
from .mask_pairing import MASK_SOURCES, SEPARATOR, split_sources

logger = logging.getLogger(__name__)


def index_csv(raw_files: Mapping[str, Callable[[], bytes]], params: dict) -> pd.DataFrame:
    """One inventory row per image the table(s) of ``ingestion.csv`` list.

    Raises:
        ValueError: The tables cannot be found or read, lack a configured column, hold an
            unknown split value, or give one image two labels without ``label_priority``.
    """
    reader = _RowReader(params, set(raw_files), getattr(raw_files, "refused_links", {}))
    tables = _tables(raw_files, params["csv"]["path"])
    entries: dict[str, dict[str, str]] = {}
    conflicts: dict[str, set[str]] = {}
    for table_name in tables:
        table = _read_table(table_name, raw_files[table_name]())
        reader.check_columns(table_name, table)
        for number, row in enumerate(table.to_dict("records"), start=2):
            entry = reader.entry(row, f"{table_name} line {number}")
            if entry is None:
                continue
            rel = entry.pop("source_path")
            if rel in entries and entries[rel]["label"] != entry["label"]:
                conflicts.setdefault(rel, {entries[rel]["label"]}).add(entry["label"])
            _add_masks(entries.setdefault(rel, entry), entry)
    _resolve_conflicts(entries, conflicts, params["csv"]["label_priority"])
    extra = list(params["csv"]["extra_columns"])
    if params["csv"]["mask_column"]:
        extra.append(MASK_SOURCES)
    rows = [
        (rel, *(e[c] for c in INVENTORY_COLUMNS[1:] + extra)) for rel, e in sorted(entries.items())
    ]
    inventory = pd.DataFrame(rows, columns=INVENTORY_COLUMNS + extra)
    problems = int((inventory["problem"] != "").sum())
    if problems:
        logger.warning("%d row(s) of %s cannot be ingested (see below)", problems, tables)
    return inventory


@dataclass
class _RowReader:
    """Turns one table row into an inventory entry, by the ``ingestion.csv`` settings."""

    params: dict
    files: set[str]
    refused_links: Mapping[str, str]

    def __post_init__(self) -> None:
        csv = self.params["csv"]
        self.columns = {
            "ingestion.csv.path_column": csv["path_column"],
            "ingestion.csv.label_column": csv["label_column"],
            "ingestion.csv.group_column": csv["group_column"],
            "ingestion.csv.split_column": csv["split_column"],
        }
        self.extra = {
            f"ingestion.csv.extra_columns.{column}": (column, table_column)
            for column, table_column in csv["extra_columns"].items()
        }
        self.mask_column = csv["mask_column"]
        self.label_pattern = compile_pattern(self.params["label_pattern"])
        self.group_pattern = compile_pattern(self.params["group_pattern"])

    def check_columns(self, table_name: str, table: pd.DataFrame) -> None:
        extra = {parameter: column for parameter, (_, column) in self.extra.items()}
        extra["ingestion.csv.mask_column"] = self.mask_column
        for parameter, column in {**self.columns, **extra}.items():
            if column and column not in table.columns:
                raise ValueError(
                    f"{parameter} is {column!r} but {table_name} has no such column; its "
                    f"columns are {list(table.columns)}"
                )

    def entry(self, row: Mapping[str, Any], where: str) -> dict[str, Any] | None:
        """The row's entry, ``None`` for a row without a path or one not selected."""
        path_col, label_col, group_col, split_col = list(self.columns.values())
        rel = clean_path(row[path_col])
        if not rel or not selected(rel, self.params, need_image_name=False):
            return None
        parts = PurePosixPath(rel).parts
        label = _cell(row, label_col) if label_col else label_of(rel, parts, self.label_pattern)
        group = _cell(row, group_col) if group_col else group_of(rel, self.group_pattern)
        split = self._split(row, split_col, where) if split_col else ""
        mask = clean_path(_cell(row, self.mask_column)) if self.mask_column else ""
        problem = ""
        if PurePosixPath(rel).is_absolute() or ".." in parts:
            problem = f"{where}: the path must be relative to ingestion.source_dir"
        elif rel in self.refused_links:
            problem = f"{where}: {link_problem(self.refused_links[rel], self.params)}"
        elif rel not in self.files:
            problem = f"{where}: listed but not found under ingestion.source_dir"
        elif not label:
            problem = f"{where}: no label"
        elif not group:
            problem = f"{where}: empty {group_col!r} (patient/group id)"
        elif mask and mask not in self.files:
            problem = (
                f"{where}: the mask {mask!r} (ingestion.csv.mask_column {self.mask_column!r}) "
                "is not found under ingestion.source_dir"
            )
        label = str(self.params["label_map"].get(label, label)) if label else ""
        return {
            "source_path": rel,
            "label": label,
            "group": group,
            "split": split,
            "problem": problem,
            MASK_SOURCES: mask,
            **{
                column: clean_value(column, _cell(row, source))
                for column, source in self.extra.values()
            },
        }

    @staticmethod
    def _split(row: Mapping[str, Any], column: str, where: str) -> str:
        value = _cell(row, column)
        split = SPLIT_FOLDERS.get(value.lower(), "")
        if not split:
            raise ValueError(
                f"{where}: ingestion.csv.split_column {column!r} is {value!r}; "
                f"expected one of {sorted(SPLIT_FOLDERS)} (case-insensitive)"
            )
        return split


def _add_masks(kept: dict[str, Any], entry: dict[str, Any]) -> None:
    """Join the mask of another row of the same image (another lesion) to the kept entry."""
    if kept is entry or not entry[MASK_SOURCES]:
        return
    if entry["problem"]:  # e.g. this lesion's mask is missing: the image cannot be ingested
        kept["problem"] = kept["problem"] or entry["problem"]
        return
    masks = split_sources(kept[MASK_SOURCES])
    if entry[MASK_SOURCES] not in masks:
        kept[MASK_SOURCES] = SEPARATOR.join([*masks, entry[MASK_SOURCES]])


def _tables(raw_files: Mapping[str, Any], path: str) -> list[str]:
    pattern = clean_path(path)
    tables = sorted(rel for rel in raw_files if rel == pattern or fnmatch.fnmatch(rel, pattern))
    if not tables:
        raise ValueError(
            f"ingestion.csv.path {path!r} matches no file in ingestion.source_dir; give "
            "a path (or glob) relative to ingestion.source_dir, e.g. 'labels.csv' or "
            "'*_case_description_*.csv' (a table behind a symbolic link that leads outside "
            "the folder is not read unless ingestion.follow_external_links is true)"
        )
    return tables


def _resolve_conflicts(
    entries: dict[str, dict[str, str]], conflicts: dict[str, set[str]], priority: list | None
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


def clean_path(value: Any) -> str:
    """A table's path cell as a posix path relative to the source (backslashes, ``./`` removed)."""
    text = "" if value is None else str(value).strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text
