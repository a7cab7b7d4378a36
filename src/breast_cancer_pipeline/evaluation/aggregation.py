"""Several probability rows made into one: a patient's, breast's or exam's images, an image's tiles.

The one home of the rule that combines them, used by reporting (levels), the batch command
and the served model (a request's rows that share a key), and tiling.

Rules (``evaluation.level_aggregation``; ``augmentation.tiles.aggregation`` adds
``top_k_mean`` and ``attention``):

- ``mean``: the average of the rows' probabilities.
- ``max``: the positive class takes its highest probability over the rows.
- ``noisy_or``: the positive class takes ``1 - prod(1 - p_i)``: the whole is positive if any
  row is, each row an independent witness.
- ``top_k_mean``: the positive class takes the mean of its ``top_k`` highest probabilities.

Under ``max``, ``noisy_or`` and ``top_k_mean`` the other classes share what is left in
proportion to their mean over the rows, so each aggregated row still sums to 1. Without a
positive class these rules apply to every class and the row is renormalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: The rules for rows of one key (``evaluation.level_aggregation``).
LEVEL_AGGREGATIONS = ("mean", "max", "noisy_or")

#: Every rule this module knows.
AGGREGATIONS = (*LEVEL_AGGREGATIONS, "top_k_mean")

#: The column of an aggregated table that counts the rows behind each key.
N_ROWS_COLUMN = "n_images"


def _positive_score(proba: np.ndarray, method: str, top_k: int) -> np.ndarray:
    """Column-wise score of ``proba`` (``(n, k)``) under ``method``: shape ``(k,)``."""
    if method == "max":
        return proba.max(axis=0)
    if method == "noisy_or":
        return 1.0 - np.prod(1.0 - np.clip(proba, 0.0, 1.0), axis=0)
    if method == "top_k_mean":
        k = max(1, min(int(top_k), proba.shape[0]))
        return np.sort(proba, axis=0)[-k:].mean(axis=0)
    raise ValueError(f"unknown aggregation {method!r}")


def aggregate(
    proba: np.ndarray, method: str, positive: int | None = None, *, top_k: int = 3
) -> np.ndarray:
    """Combine the rows of ``proba`` into one probability row.

    Args:
        proba: ``(n, k)`` class probabilities of the ``n >= 1`` rows of one key.
        method: One of `AGGREGATIONS`.
        positive: Index of the positive class (``reporting.positive_class``), or None to apply
            the rule to every class and renormalise.
        top_k: Rows averaged by ``top_k_mean`` (at most ``n``).

    Returns:
        ``(k,)`` probabilities summing to 1.

    Raises:
        ValueError: ``proba`` has no rows, or ``method`` is unknown.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[0] == 0:
        raise ValueError(f"aggregate needs an (n, k) array with n >= 1, got shape {proba.shape}")
    if method not in AGGREGATIONS:
        raise ValueError(
            f"unknown aggregation {method!r}; expected one of {', '.join(AGGREGATIONS)}"
        )
    mean = proba.mean(axis=0)
    if method == "mean" or proba.shape[0] == 1:
        return mean / mean.sum()
    score = _positive_score(proba, method, top_k)
    if positive is None:
        return score / score.sum()
    p_pos = float(np.clip(score[positive], 0.0, 1.0))
    rest = np.delete(mean, positive)
    rest = rest / rest.sum() if rest.sum() > 0 else np.full(rest.shape, 1.0 / max(rest.size, 1))
    return np.insert(rest * (1.0 - p_pos), positive, p_pos)


def aggregate_by_key(
    frame: pd.DataFrame,
    key_columns: Sequence[str],
    prob_columns: Sequence[str],
    method: str,
    positive: int | None = None,
    *,
    top_k: int = 3,
) -> pd.DataFrame:
    """One row per distinct key of ``frame``, its probabilities aggregated by ``method``.

    Args:
        frame: One row per image (or tile), with ``key_columns`` and ``prob_columns``.
        key_columns: The columns whose values identify the whole (e.g. ``["group",
            "laterality"]`` for a breast). Rows with an empty key value are left out.
        prob_columns: The ``p_<class>`` columns, in class order.
        method: One of `AGGREGATIONS`.
        positive: Index of the positive class within ``prob_columns`` (see `aggregate`).
        top_k: Rows averaged by ``top_k_mean``.

    Returns:
        ``key_columns``, then ``prob_columns`` aggregated, then `N_ROWS_COLUMN`; keys in order
        of first appearance.

    Raises:
        KeyError: A key or probability column is missing from ``frame``.
    """
    missing = [c for c in (*key_columns, *prob_columns) if c not in frame.columns]
    if missing:
        raise KeyError(f"columns {missing} are not in the table (it has {list(frame.columns)})")
    keyed = frame.dropna(subset=list(key_columns))
    keyed = keyed[(keyed[list(key_columns)].astype(str) != "").all(axis=1)]
    rows = []
    for key, part in keyed.groupby(list(key_columns), sort=False, dropna=True):
        values = key if isinstance(key, tuple) else (key,)
        proba = aggregate(part[list(prob_columns)].to_numpy(), method, positive, top_k=top_k)
        rows.append((*values, *proba, len(part)))
    return pd.DataFrame(rows, columns=[*key_columns, *prob_columns, N_ROWS_COLUMN])
