"""Exact duplicates (one row kept per image and label) and conflicts (one image, two labels)."""

from __future__ import annotations

import logging

import pandas as pd

logger = logging.getLogger(__name__)

#: Columns of ``duplicates.csv``.
DUPLICATE_COLUMNS = ["sha256", "kind", "label", "source_path", "kept_source_path"]


def collapse(image_info: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the first row (by ``source_path``) of each identical image under one label.

    Returns:
        ``(image_info, report)``: the rows kept, with ``duplicates`` listing the dropped
        copies; one report row per dropped copy and per row of a conflict.
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
        kept_source = info.loc[kept, "source_path"]
        report.extend(
            _report_row(sha, "duplicate", label, info.loc[index, "source_path"], kept_source)
            for index in copies
        )
    info = info.drop(index=drop)
    conflicts = info[info.groupby("sha256")["label"].transform("nunique") > 1]
    report.extend(
        _report_row(row["sha256"], "conflict", row["label"], row["source_path"], row["source_path"])
        for row in conflicts.sort_values(["sha256", "label"]).to_dict("records")
    )
    _log(len(drop), conflicts)
    return info.reset_index(drop=True), pd.DataFrame(report, columns=DUPLICATE_COLUMNS)


def _report_row(sha: str, kind: str, label: str, source: str, kept: str) -> dict[str, str]:
    return dict(zip(DUPLICATE_COLUMNS, (sha, kind, label, source, kept), strict=True))


def _log(n_dropped: int, conflicts: pd.DataFrame) -> None:
    if n_dropped:
        logger.warning(
            "Collapsed %d exact duplicate image(s) under the same label (listed in the "
            "manifest's duplicates column and data/02_intermediate/duplicates.csv)",
            n_dropped,
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
