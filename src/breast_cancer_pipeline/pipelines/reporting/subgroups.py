"""The ``subgroups`` block of ``metrics.json``: the model per subgroup (``reporting.subgroups``).

Each subgroup of the test split (a value of a manifest column, or a band of a numeric one)
gets its number of images, AUROC with a bootstrap interval (patients resampled when they
have several images), and sensitivity and specificity at the operating threshold. The
``site`` column holds the internal test split and the external site. A subgroup whose
interval lies wholly below the overall test AUROC is listed in ``below_overall``.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation.levels import GROUP_COLUMN, image_groups
from breast_cancer_pipeline.evaluation.predictions import as_arrays
from breast_cancer_pipeline.evaluation.subgroups import (
    INTERNAL,
    SITE_COLUMN,
    UNKNOWN,
    band_names,
    subgroup_columns,
)

from .levels import SUBGROUP_PREFIX
from .parameters import check_positive_class

logger = logging.getLogger(__name__)


def subgroup_figures(
    predictions: pd.DataFrame,
    groups: Any,
    threshold: float,
    class_names: list[str],
    positive: str,
    bootstrap: dict,
) -> dict[str, Any]:
    """``n``, AUROC with interval, sensitivity and specificity at ``threshold`` of some images.

    Args:
        predictions: The subgroup's rows of a predictions table.
        groups: Their patients (a cluster bootstrap when one has several images), or None.
        threshold: The operating threshold on p(``positive``).
        class_names: The model's classes.
        positive: ``reporting.positive_class``.
        bootstrap: ``reporting.bootstrap``.

    Returns:
        ``{"n", "n_positive", "auroc", "auroc_ci_low", "auroc_ci_high", "sensitivity",
        "specificity"}`` (NaN where undefined, e.g. AUROC of a one-class subgroup).
    """
    y, proba = as_arrays(predictions, class_names)
    pos = class_names.index(positive)
    counts = m.binary_counts(y == pos, proba[:, pos] >= threshold)
    return {
        "n": len(y),
        "n_positive": int((y == pos).sum()),
        **m.auroc_with_interval(y, proba, **bootstrap, groups=groups),
        "sensitivity": counts["sensitivity"],
        "specificity": counts["specificity"],
    }


def _order(values: pd.Series, edges: list | None) -> list[str]:
    """The subgroups of a column in report order: bands in order, else natural order."""
    present = set(values)
    if edges:
        return [v for v in [*band_names(edges), UNKNOWN] if v in present]

    def natural(value: str) -> tuple:
        number = pd.to_numeric(value, errors="coerce")
        return (value == UNKNOWN, pd.isna(number), 0.0 if pd.isna(number) else number, value)

    return sorted(present, key=natural)


def _evaluated(test: pd.DataFrame, external: pd.DataFrame, keys: pd.DataFrame) -> pd.DataFrame:
    """The test and external rows with their patient and subgroup columns."""
    rows = pd.concat([test, external], ignore_index=True) if not external.empty else test
    wanted = ["path", GROUP_COLUMN, *[c for c in keys.columns if c.startswith(SUBGROUP_PREFIX)]]
    image_groups(rows, keys)  # every image known
    return rows.merge(keys[wanted], on="path", how="left")


def subgroup_metrics(
    test_predictions: pd.DataFrame,
    external_predictions: pd.DataFrame,
    keys: pd.DataFrame,
    operating_point: dict[str, Any],
    metadata: dict[str, Any],
    params: dict,
) -> dict[str, Any]:
    """The ``subgroups`` block of ``metrics.json``.

    Args:
        test_predictions: The test split's predictions, as served.
        external_predictions: The external site's (no rows without one).
        keys: :func:`.levels.evaluation_keys`'s table.
        operating_point: The image level's threshold, chosen on validation.
        metadata: The classifier's metadata (``class_names``).
        params: The ``reporting`` parameters (``subgroups``, ``bootstrap``).

    Returns:
        ``overall`` (the test split), ``columns`` (column → subgroup → :func:`subgroup_figures`;
        ``site`` holds ``internal`` and ``external``, the others the test split's images) and
        ``below_overall`` (``"<column> = <value>"`` for each subgroup whose AUROC interval lies
        wholly below the overall AUROC), and ``bootstrap`` (``cluster`` or ``image``).
    """
    names, positive = metadata["class_names"], params["positive_class"]
    check_positive_class(positive, names)
    rows = _evaluated(test_predictions, external_predictions, keys)
    internal = rows[rows[f"{SUBGROUP_PREFIX}{SITE_COLUMN}"] == INTERNAL]
    threshold, boot = float(operating_point["threshold"]), params["bootstrap"]

    def figures(part: pd.DataFrame) -> dict[str, Any]:
        groups = part[GROUP_COLUMN].astype(str).to_numpy()
        return subgroup_figures(part, groups, threshold, names, positive, boot)

    overall = figures(internal)
    columns: dict[str, dict[str, Any]] = {}
    below = []
    for column, edges in subgroup_columns(params["subgroups"]).items():
        source = rows if column == SITE_COLUMN else internal
        values = source[f"{SUBGROUP_PREFIX}{column}"]
        columns[column] = {}
        for value in _order(values, edges):
            found = figures(source[values == value])
            columns[column][value] = found
            if found["auroc_ci_high"] < overall["auroc"]:
                below.append(f"{column} = {value}")
    if below:
        logger.warning("Subgroups whose AUROC interval lies below the overall: %s", below)
    kind = m.bootstrap_kind(internal[GROUP_COLUMN].astype(str).to_numpy())
    return m.json_safe(
        {"overall": overall, "columns": columns, "below_overall": below, "bootstrap": kind}
    )
