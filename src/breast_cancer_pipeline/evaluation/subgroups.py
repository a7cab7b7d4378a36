"""Subgroups of the evaluated images (``reporting.subgroups``): which images fall in which.

A subgroup column is a manifest column (``manufacturer``, ``view``, ``magnification``...),
its distinct values the subgroups, or a numeric column cut into bands at given edges
(``patient_age: [40, 50, 60, 70]`` gives ``<40``, ``40-50``, ..., ``>=70``). The external
site is always a subgroup of the ``site`` column (``internal``: the test split;
``external``: ``ingestion.external_dir``'s images).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.manifest import EXTERNAL_SPLIT

#: The column whose subgroups are the internal test split and the external site.
SITE_COLUMN = "site"

#: The subgroup of the images whose value is empty (or outside every band: not a number).
UNKNOWN = "unknown"

#: The internal test split's value of :data:`SITE_COLUMN`.
INTERNAL = "internal"


def subgroup_columns(setting: Sequence[str] | Mapping[str, Any] | None) -> dict[str, list | None]:
    """``reporting.subgroups`` as column → band edges (``None``: the column's own values).

    Args:
        setting: A list of columns, or a mapping of column to its band edges (or null).

    Returns:
        :data:`SITE_COLUMN` first, then the columns in the order given.
    """
    if setting is None:
        setting = []
    pairs = setting.items() if isinstance(setting, Mapping) else ((c, None) for c in setting)
    columns: dict[str, list | None] = {SITE_COLUMN: None}
    for column, edges in pairs:
        columns[str(column)] = [float(e) for e in edges] if edges else None
    return columns


def _edge(value: float) -> str:
    return f"{value:g}"


def band_names(edges: Sequence[float]) -> list[str]:
    """The names of the bands that ``edges`` cut: ``<e0``, ``e0-e1``, ..., ``>=en``."""
    inner = [f"{_edge(lo)}-{_edge(hi)}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return [f"<{_edge(edges[0])}", *inner, f">={_edge(edges[-1])}"]


def bands(values: pd.Series, edges: Sequence[float]) -> pd.Series:
    """The band of each value: ``[e_i, e_{i+1})`` named by :func:`band_names`.

    Args:
        values: Numbers, or text holding numbers; empty or not a number gives :data:`UNKNOWN`.
        edges: Increasing band edges.

    Returns:
        Text, one band name per value.
    """
    numbers = pd.to_numeric(values.replace("", np.nan), errors="coerce").to_numpy(dtype=float)
    names = np.asarray(band_names(edges), dtype=object)
    found = names[np.searchsorted(np.asarray(edges, dtype=float), numbers, side="right")]
    return pd.Series(np.where(np.isnan(numbers), UNKNOWN, found), index=values.index, dtype=object)


def site_of(split: pd.Series) -> pd.Series:
    """``external`` for the external site's images, :data:`INTERNAL` for every other."""
    return pd.Series(
        np.where(split == EXTERNAL_SPLIT, EXTERNAL_SPLIT, INTERNAL), index=split.index, dtype=object
    )


def subgroup_values(values: pd.Series, edges: Sequence[float] | None) -> pd.Series:
    """The subgroup of each image: its band, or its value as text (empty: :data:`UNKNOWN`)."""
    if edges:
        return bands(values, edges)
    text = values.astype(object).where(values.notna(), "").astype(str).str.strip()
    return text.where(text != "", UNKNOWN)
