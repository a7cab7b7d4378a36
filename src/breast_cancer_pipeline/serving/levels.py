"""Answers for the rows of a request that share a key: a patient's, a breast's, an exam's.

A packaged model may carry the operating points reporting chose per level (the ``levels`` key
of ``serving.json``, the ``level_operating_points`` dataset)::

    {"aggregation": "mean", "positive_class": "malignant",
     "levels": {"patient": {"columns": ["group"], "threshold": 0.41},
                "breast": {"columns": ["group", "laterality"], "threshold": 0.37}}}

For each level whose columns are all in a request (or in the batch command's frame), the rows
that were scored and share that level's key are combined by
:func:`~breast_cancer_pipeline.evaluation.aggregation.aggregate_by_key` (the served,
recalibrated probabilities; rows with an error do not count) and decided at the level's own
threshold by :func:`thresholded_classes`, the rule of the image's ``thresholded_label``. Each
of those rows gets the answer as ``<level>_p_<class>``, ``<level>_label`` and
``<level>_n_images``; a row with an error or an empty key gets nulls there. A model packaged
without levels answers as before: no level columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.evaluation.aggregation import (
    LEVEL_AGGREGATIONS,
    N_ROWS_COLUMN,
    aggregate_by_key,
)

#: The optional request columns that identify a level (declared in the served signature).
LEVEL_COLUMNS = ("group", "laterality", "view", "study")
#: The level table's column holding the decision at the level's threshold.
LABEL_COLUMN = "label"


def check_levels(levels: Mapping[str, Any] | None, positive_class: str) -> dict[str, Any] | None:
    """Validate the levels' operating points a model is packaged with.

    Args:
        levels: ``{"aggregation", "positive_class", "levels": {name: {"columns",
            "threshold"}}}`` as the reporting pipeline writes it, or None (a model packaged
            without levels).
        positive_class: The model's positive class (``reporting.positive_class``).

    Returns:
        A plain copy with the columns as lists of text and the thresholds as floats, or None.

    Raises:
        ValueError: A key is missing or a value is out of range, naming it.
    """
    if levels is None:
        return None
    missing = [k for k in ("aggregation", "positive_class", "levels") if k not in levels]
    if missing:
        raise ValueError(f"the levels' operating points lack {missing}: re-run reporting")
    if levels["aggregation"] not in LEVEL_AGGREGATIONS:
        raise ValueError(
            f"levels aggregation {levels['aggregation']!r} is not one of {LEVEL_AGGREGATIONS} "
            "(parameter evaluation.level_aggregation)"
        )
    if levels["positive_class"] != positive_class:
        raise ValueError(
            f"the levels' positive class {levels['positive_class']!r} is not the model's "
            f"{positive_class!r}: re-run reporting"
        )
    checked = {}
    for name, level in levels["levels"].items():
        if not isinstance(level, Mapping):
            raise ValueError(f"level {name!r} must be {{columns, threshold}}, got {level!r}")
        columns = [str(c) for c in level.get("columns") or []]
        threshold = float(level.get("threshold", np.nan))
        if not columns or not 0.0 <= threshold <= 1.0:
            raise ValueError(
                f"level {name!r} needs columns and a threshold within [0, 1], got {dict(level)}"
            )
        checked[str(name)] = {"columns": columns, "threshold": threshold}
    return {**levels, "levels": checked}


def level_thresholds(config: Mapping[str, Any]) -> dict[str, float]:
    """Each level's operating threshold in a serving configuration (empty without levels)."""
    levels = config.get("levels") or {}
    return {name: float(level["threshold"]) for name, level in levels.get("levels", {}).items()}


def thresholded_classes(proba: np.ndarray, positive: int, threshold: float) -> np.ndarray:
    """The decision at an operating threshold, for an image or any level's combined row.

    Args:
        proba: ``(n, k)`` class probabilities (NaN rows are decided as zeros).
        positive: Index of the positive class.
        threshold: The operating threshold on the positive class's probability.

    Returns:
        ``(n,)`` class indices: the positive class where its probability reaches
        ``threshold``, else the most probable other class.
    """
    safe = np.nan_to_num(np.asarray(proba, dtype=np.float64))
    others = np.array([i for i in range(safe.shape[1]) if i != positive])
    best_other = others[safe[:, others].argmax(axis=1)] if len(others) else positive
    return np.where(safe[:, positive] >= threshold, positive, best_other)


def key_columns(frame: pd.DataFrame, levels: Mapping[str, Any] | None) -> list[str]:
    """The columns of ``frame`` that identify a level, to echo with each row's answer.

    Returns:
        Those of :data:`LEVEL_COLUMNS`, then of the other columns a level of ``levels`` uses,
        that ``frame`` has, in that order.
    """
    used = [c for level in (levels or {}).get("levels", {}).values() for c in level["columns"]]
    wanted = dict.fromkeys([*LEVEL_COLUMNS, *used])
    return [c for c in wanted if c in frame.columns]


def level_tables(
    rows: pd.DataFrame, levels: Mapping[str, Any] | None, class_names: Sequence[str]
) -> dict[str, pd.DataFrame]:
    """One table per level whose columns are all in ``rows``: one row per key.

    Args:
        rows: The answered rows: the key columns, ``p_<class>`` and ``error`` (a row whose
            ``error`` is not empty is left out).
        levels: The checked levels (:func:`check_levels`), or None.
        class_names: The model's classes, in output order.

    Returns:
        ``{level: table}``; each table has the level's key columns (as text), ``p_<class>``,
        ``label`` (the decision at the level's threshold) and ``n_images``, keys in order of
        first appearance. Empty without levels.
    """
    if not levels:
        return {}
    prob_columns = [f"p_{c}" for c in class_names]
    positive = list(class_names).index(levels["positive_class"])
    scored = rows if "error" not in rows.columns else rows[rows["error"].fillna("") == ""]
    tables = {}
    for name, level in levels["levels"].items():
        columns = level["columns"]
        if not set(columns) <= set(rows.columns):
            continue
        keyed = scored[[*columns, *prob_columns]].copy()
        keyed[columns] = keyed[columns].map(_key_text)
        keyed[prob_columns] = keyed[prob_columns].astype(np.float64)
        table = aggregate_by_key(keyed, columns, prob_columns, levels["aggregation"], positive)
        called = thresholded_classes(table[prob_columns].to_numpy(), positive, level["threshold"])
        labels = [class_names[i] for i in called]
        table.insert(len(columns) + len(prob_columns), LABEL_COLUMN, labels)
        tables[name] = table
    return tables


def level_columns(
    rows: pd.DataFrame, levels: Mapping[str, Any] | None, class_names: Sequence[str]
) -> dict[str, list]:
    """Each row's answer at every level whose columns are all in ``rows``.

    Args:
        rows: As for :func:`level_tables`.
        levels: The checked levels, or None.
        class_names: The model's classes, in output order.

    Returns:
        ``{column: one value per row}``: per level ``<level>_p_<class>``, ``<level>_label`` and
        ``<level>_n_images``, ``None`` for a row with an error or an empty key. Empty without
        levels or without any level's columns.
    """
    out: dict[str, list] = {}
    scored = [not error for error in _errors(rows)]
    answer_columns = [*(f"p_{c}" for c in class_names), LABEL_COLUMN, N_ROWS_COLUMN]
    for name, table in level_tables(rows, levels, class_names).items():
        columns = levels["levels"][name]["columns"]
        answers = {
            tuple(key): [_plain(v) for v in answer]
            for key, answer in zip(
                table[columns].itertuples(index=False, name=None),
                table[answer_columns].itertuples(index=False, name=None),
                strict=True,
            )
        }
        keys = [tuple(map(_key_text, key)) for key in rows[columns].itertuples(index=False)]
        found = [
            answers.get(k) if ok and all(k) else None for k, ok in zip(keys, scored, strict=True)
        ]
        for j, column in enumerate(answer_columns):
            out[f"{name}_{column}"] = [None if a is None else a[j] for a in found]
    return out


def _errors(rows: pd.DataFrame) -> list:
    if "error" not in rows.columns:
        return [""] * len(rows)
    return ["" if e is None or (isinstance(e, float) and np.isnan(e)) else e for e in rows["error"]]


def _key_text(value: Any) -> str:
    """A key cell as text: empty for a missing value, so ``1`` and ``"1"`` are one key."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    return str(value).strip()


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value the served JSON writes."""
    return value.item() if isinstance(value, np.generic) else value
