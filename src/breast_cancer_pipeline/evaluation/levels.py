"""Levels: the images of a patient, a breast or an exam judged as one (``evaluation.levels``).

A level is named by the manifest columns that identify it, e.g. ``patient: [group]`` or
``breast: [group, laterality]``. Its probabilities are its images' combined by
``evaluation.level_aggregation`` (:mod:`.aggregation`, the one home of that rule); its label
comes from its images' labels by ``evaluation.level_label``:

- ``any_positive``: the positive class if any image has it (a breast with one malignant
  view is malignant), else the most frequent of the others;
- ``majority``: the most frequent label (a tie goes to the positive class if it is tied,
  else to the first tied class of the model);
- ``error``: every image of a key must have the same label, else the run stops naming the
  keys whose images disagree.

The bootstrap of a level resamples its rows' patients (the ``cluster`` column): a breast or
an exam belongs to one patient, and a patient's breasts stay together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .aggregation import N_ROWS_COLUMN, aggregate_by_key

#: The rules of ``evaluation.level_label``.
LEVEL_LABELS = ("any_positive", "majority", "error")

#: The manifest column of the patient; every level's bootstrap resamples it.
GROUP_COLUMN = "group"

#: Columns of :func:`level_table` before the ``p_<class>`` columns.
LEVEL_KEY_COLUMNS = ["key", "cluster", "label", "predicted"]

#: Keys named in an error before "and N more".
_SHOWN = 10


def check_level_columns(manifest: pd.DataFrame, levels: Mapping[str, Sequence[str]]) -> None:
    """Check that every column of every level is in the manifest and filled on every row.

    Args:
        manifest: The validated manifest.
        levels: ``evaluation.levels``: level name → the columns that identify it.

    Raises:
        ValueError: A level column is not in the manifest, or is empty (``""`` or null) on
            some rows; the message names the level, the column and the share missing.
    """
    for level, columns in levels.items():
        for column in columns:
            if column not in manifest.columns:
                raise ValueError(
                    f"evaluation.levels.{level} needs the manifest column {column!r}, which "
                    f"the manifest does not have (it has {', '.join(map(str, manifest.columns))})"
                    ": extract it at ingestion (ingestion.column_patterns or "
                    "ingestion.csv.extra_columns) or remove the level"
                )
            values = manifest[column]
            empty = values.isna() | (values.astype(str).str.strip() == "")
            if empty.any():
                example = manifest.loc[empty, "path"].iloc[0] if "path" in manifest else "?"
                raise ValueError(
                    f"evaluation.levels.{level}: the manifest column {column!r} is empty on "
                    f"{int(empty.sum())} of {len(manifest)} images ({empty.mean():.1%}), e.g. "
                    f"{example}: fill it for every image or remove the level"
                )


def image_groups(predictions: pd.DataFrame, keys: pd.DataFrame | None) -> np.ndarray | None:
    """The patient (``group``) of each row of a predictions table, for the cluster bootstrap.

    Args:
        predictions: A predictions table (``path`` column).
        keys: ``path`` and ``group`` of every image (reporting's ``evaluation_keys``), or
            None: no groups (a per-image bootstrap).

    Returns:
        One group id (text) per row, or None without ``keys``.

    Raises:
        KeyError: An image of ``predictions`` is not in ``keys``.
    """
    if keys is None:
        return None
    lookup = keys.set_index("path")[GROUP_COLUMN].astype(str)
    paths = predictions["path"].astype(str)
    missing = paths[~paths.isin(lookup.index)]
    if len(missing):
        raise KeyError(
            f"{len(missing)} predicted image(s) are not in the validated manifest, e.g. "
            f"{missing.iloc[0]}: rerun the pipeline from ingestion"
        )
    return lookup.loc[paths].to_numpy()


def _label_of(labels: pd.Series, rule: str, positive: str, class_order: Sequence[str]) -> str:
    """One key's label from its images' (``any_positive`` or ``majority``)."""
    if rule == "any_positive" and (labels == positive).any():
        return positive
    if rule == "any_positive":
        labels = labels[labels != positive]
    counts = labels.value_counts()
    tied = set(counts.index[counts == counts.max()])
    if rule == "majority" and positive in tied:
        return positive
    return next(c for c in class_order if c in tied)


def _disagreeing(merged: pd.DataFrame, columns: list[str], level: str) -> None:
    """Raise for ``level_label: error`` when some key's images have several labels."""
    n_labels = merged.groupby(columns, sort=False)["label"].nunique()
    bad = n_labels[n_labels > 1]
    if bad.empty:
        return
    names = ["/".join(map(str, k if isinstance(k, tuple) else (k,))) for k in bad.index]
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    raise ValueError(
        f"evaluation.level_label is 'error' and the images of {len(names)} {level}(s) do not "
        f"share one label: {', '.join(names[:_SHOWN])}{more}. Fix their labels, or set "
        "evaluation.level_label to any_positive or majority"
    )


def level_table(
    predictions: pd.DataFrame,
    keys: pd.DataFrame,
    level: str,
    columns: Sequence[str],
    class_names: Sequence[str],
    positive: str,
    aggregation: str,
    label_rule: str,
) -> pd.DataFrame:
    """One row per key of a level: its images' probabilities combined, its label by rule.

    Args:
        predictions: A split's predictions table (``path``, ``label``, ``p_<class>``).
        keys: ``path``, ``group`` and the level's ``columns`` of every image (the manifest's).
        level: The level's name (for messages).
        columns: The columns that identify a key of the level.
        class_names: The model's classes.
        positive: ``reporting.positive_class``.
        aggregation: ``evaluation.level_aggregation`` (one of
            :data:`~breast_cancer_pipeline.evaluation.aggregation.LEVEL_AGGREGATIONS`).
        label_rule: ``evaluation.level_label`` (one of :data:`LEVEL_LABELS`).

    Returns:
        :data:`LEVEL_KEY_COLUMNS` (``key``: the columns' values joined by ``/``;
        ``cluster``: the key's patient, or the key itself when it spans several), the
        ``p_<class>`` columns and ``n_images``; keys in order of first appearance.

    Raises:
        KeyError: An image of ``predictions`` is not in ``keys``.
        ValueError: ``label_rule`` is ``error`` and the images of some keys disagree.
    """
    columns, prob_columns = list(columns), [f"p_{c}" for c in class_names]
    image_groups(predictions, keys)  # every image known
    wanted = list(dict.fromkeys(["path", GROUP_COLUMN, *columns]))
    merged = predictions[["path", "label", *prob_columns]].merge(
        keys[wanted].astype(str), on="path", how="left"
    )
    if label_rule == "error":
        _disagreeing(merged, columns, level)
    table = aggregate_by_key(
        merged, columns, prob_columns, aggregation, list(class_names).index(positive)
    )
    grouped = merged.groupby(columns, sort=False)
    rule = "majority" if label_rule == "error" else label_rule
    found = pd.DataFrame(
        {
            "label": grouped["label"].agg(lambda s: _label_of(s, rule, positive, class_names)),
            "patient": grouped[GROUP_COLUMN].agg(lambda s: s.iloc[0] if s.nunique() == 1 else ""),
        }
    ).reset_index()
    table = table.merge(found, on=columns, how="left")
    key = table[columns].agg("/".join, axis=1) if len(table) else pd.Series([], dtype=str)
    proba = table[prob_columns].to_numpy(dtype=float)
    out = pd.DataFrame(
        {
            "key": key.to_numpy(),
            "cluster": np.where(table["patient"] != "", table["patient"], key).astype(str),
            "label": table["label"].to_numpy(),
            "predicted": [class_names[i] for i in proba.argmax(axis=1)],
        }
    )
    for name in [*prob_columns, N_ROWS_COLUMN]:
        out[name] = table[name].to_numpy()
    return out
