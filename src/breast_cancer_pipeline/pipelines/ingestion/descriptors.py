"""The manifest's descriptive columns: from the file's path, its table row, its DICOM header.

Each column has one source. A column that ``ingestion.column_patterns`` or
``ingestion.csv.extra_columns`` names takes its values from there (empty where a pattern does
not match or a cell is empty); every other column of
:data:`~breast_cancer_pipeline.manifest.DESCRIPTIVE_COLUMNS` comes from the DICOM header
(:data:`breast_cancer_pipeline.columns.DICOM_TAGS`), empty for other formats.

Path patterns are applied when the source is indexed (:func:`add_path_columns`), so a path
pattern for ``group`` decides the split like ``group_pattern`` does; tag patterns once the
conversion has read the headers (:func:`add_header_columns`), before the split.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from breast_cancer_pipeline.columns import path_columns, split_spec, tag_columns
from breast_cancer_pipeline.manifest import (
    DESCRIPTIVE_COLUMNS,
    EXTERNAL_PREFIX,
    EXTERNAL_SPLIT,
    NUMERIC_DESCRIPTIVE_COLUMNS,
)

from .conversion import TAGS_FIELD

logger = logging.getLogger(__name__)


def add_path_columns(inventory: pd.DataFrame, params: dict, setting: str) -> pd.DataFrame:
    """The inventory of one folder with the columns of the path patterns.

    A ``group`` pattern sets the patient id; a file it does not match stays its own group
    (as with ``group_pattern``), and the count is logged.

    Args:
        inventory: One row per file of the folder, ``source_path`` relative to it.
        params: The ``ingestion`` parameters.
        setting: The folder's parameter, for the log (``ingestion.source_dir``).
    """
    patterns = {c: s for c, s in params["column_patterns"].items() if split_spec(s)[0] is None}
    if not patterns or inventory.empty:
        return inventory
    values = pd.DataFrame(
        [path_columns(rel, patterns) for rel in inventory["source_path"]], index=inventory.index
    )
    result = inventory.copy()
    for column in values.columns:
        if column == "group":
            matched = values["group"] != ""
            result["group"] = values["group"].where(matched, result["group"])
            _log_unmatched(~matched, result["source_path"], "group", setting)
        else:
            result[column] = values[column]
    return result


def add_header_columns(info: pd.DataFrame, params: dict) -> pd.DataFrame:
    """The ingested rows with every descriptive column, the DICOM ones from their headers.

    Args:
        info: One row per ingested image, with the tags the conversion read
            (:data:`~.conversion.TAGS_FIELD`) and the columns of the indexing.
        params: The ``ingestion`` parameters.

    Returns:
        The rows without the tags: :data:`~breast_cancer_pipeline.manifest.DESCRIPTIVE_COLUMNS`
        then the other configured columns, after the columns ``info`` had. A tag pattern for
        ``group`` sets the patient id (under ``external/`` for the external site); an image it
        does not match stays its own group.
    """
    configured = [*params["column_patterns"], *params["csv"]["extra_columns"]]
    tag_patterns = {c: s for c, s in params["column_patterns"].items() if split_spec(s)[0]}
    path_set = set(configured) - set(tag_patterns)
    from_tags = pd.DataFrame(
        [tag_columns(tags, tag_patterns) for tags in info[TAGS_FIELD]], index=info.index
    )
    result = info.drop(columns=[TAGS_FIELD])
    for column in from_tags.columns:
        if column == "group":
            matched = from_tags["group"] != ""
            external = result["split"] == EXTERNAL_SPLIT
            group = from_tags["group"].where(~external, EXTERNAL_PREFIX + from_tags["group"])
            result["group"] = group.where(matched, result["group"])
            _log_unmatched(~matched, result["source_path"], "group", "the DICOM headers")
        elif column not in path_set:
            result[column] = from_tags[column]
    for column in configured:
        if column not in result.columns:  # a table column on a folder layout: empty
            result[column] = _empty(column, len(result))
    return result[[*_ordered(result.columns, configured)]]


def _ordered(columns: pd.Index, configured: list[str]) -> list[str]:
    """The columns ``info`` had, then the descriptive ones, then the other configured ones."""
    extra = [*DESCRIPTIVE_COLUMNS, *(c for c in configured if c not in DESCRIPTIVE_COLUMNS)]
    extra = [c for c in dict.fromkeys(extra) if c != "group"]
    return [*(c for c in columns if c not in extra), *extra]


def _empty(column: str, n: int) -> list[Any]:
    return [float("nan") if column in NUMERIC_DESCRIPTIVE_COLUMNS else ""] * n


def _log_unmatched(unmatched: pd.Series, paths: pd.Series, column: str, where: str) -> None:
    if unmatched.any():
        logger.warning(
            "ingestion.column_patterns.%s matched no value for %d of %d image(s) of %s (e.g. "
            "%r); each of those is its own %s",
            column,
            int(unmatched.sum()),
            len(unmatched),
            where,
            paths[unmatched].iloc[0],
            column,
        )
