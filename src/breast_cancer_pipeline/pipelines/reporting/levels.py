"""Levels: the decision read per patient, breast or exam (``evaluation.levels``).

:func:`evaluation_keys` reads off the validated manifest what reporting needs of each image
(patient, level columns, subgroups, site) and stops the run when a level column is missing
or empty: its only data input is the manifest, so in a whole ``kedro run`` Kedro runs it in
the layer right after the validation gate, before any training, and under
``--pipelines=reporting`` it is the first reporting node. The other nodes combine each
split's image predictions into one row per key of each level
(:mod:`breast_cancer_pipeline.evaluation.levels`), choose each level's threshold on
validation with the image level's rule (:func:`.fits.operating_point.choose_operating_point`)
and measure each level on the test split and the external site: ``metrics.json``
``levels.<name>``.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from breast_cancer_pipeline import metrics as m
from breast_cancer_pipeline.evaluation.levels import (
    GROUP_COLUMN,
    check_level_columns,
    level_table,
)
from breast_cancer_pipeline.evaluation.predictions import as_arrays
from breast_cancer_pipeline.evaluation.subgroups import (
    SITE_COLUMN,
    site_of,
    subgroup_columns,
    subgroup_values,
)
from breast_cancer_pipeline.manifest import EXTERNAL_SPLIT

from .fits.operating_point import choose_operating_point
from .parameters import check_positive_class

logger = logging.getLogger(__name__)

#: Prefix of a subgroup column in :func:`evaluation_keys`'s table.
SUBGROUP_PREFIX = "subgroup:"

#: The splits whose predictions :func:`level_predictions` combines.
LEVEL_SPLITS = ("val", "test", EXTERNAL_SPLIT)


def evaluation_keys(manifest: pd.DataFrame, evaluation: dict, reporting: dict) -> pd.DataFrame:
    """What reporting reads of each image off the manifest: patient, levels, subgroups, site.

    Args:
        manifest: The validated manifest.
        evaluation: The ``evaluation`` parameters (``levels``).
        reporting: The ``reporting`` parameters (``subgroups``).

    Returns:
        ``path``, ``split``, ``group``, every level column (as text), and
        ``subgroup:<column>`` for ``site`` and every subgroup column (its value, or its band).

    Raises:
        ValueError: A level column is missing from the manifest or empty on some images
            (:func:`~breast_cancer_pipeline.evaluation.levels.check_level_columns`), or a
            subgroup column is missing from the manifest.
    """
    check_level_columns(manifest, evaluation["levels"])
    subgroups = subgroup_columns(reporting["subgroups"])
    missing = [c for c in subgroups if c != SITE_COLUMN and c not in manifest.columns]
    if missing:
        raise ValueError(
            f"reporting.subgroups names {missing}, not columns of the manifest (it has "
            f"{', '.join(map(str, manifest.columns))}): remove them or extract them at ingestion"
        )
    level_columns = [c for cols in evaluation["levels"].values() for c in cols]
    columns = list(dict.fromkeys(["path", "split", GROUP_COLUMN, *level_columns]))
    keys = manifest[columns].astype(str)
    for column, edges in subgroups.items():
        values = site_of(manifest["split"]) if column == SITE_COLUMN else manifest[column]
        keys[f"{SUBGROUP_PREFIX}{column}"] = subgroup_values(values, edges)
    return keys.reset_index(drop=True)


def level_predictions(
    val_predictions: pd.DataFrame,
    test_predictions: pd.DataFrame,
    external_predictions: pd.DataFrame,
    keys: pd.DataFrame,
    metadata: dict[str, Any],
    evaluation: dict,
    reporting: dict,
) -> pd.DataFrame:
    """Every level's rows of the validation, test and external splits, in one table.

    Args:
        val_predictions: The held-out predictions the image threshold is chosen on.
        test_predictions: The test split's, as served.
        external_predictions: The external site's (no rows without one).
        keys: :func:`evaluation_keys`'s table.
        metadata: The classifier's metadata (``class_names``).
        evaluation: ``levels``, ``level_aggregation`` and ``level_label``.
        reporting: ``positive_class``.

    Returns:
        ``level``, ``split``, then the columns of
        :func:`~breast_cancer_pipeline.evaluation.levels.level_table`.
    """
    check_positive_class(reporting["positive_class"], metadata["class_names"])
    splits = zip(
        LEVEL_SPLITS, (val_predictions, test_predictions, external_predictions), strict=True
    )
    frames = [
        _split_levels(predictions, keys, metadata, evaluation, reporting).assign(split=split)
        for split, predictions in splits
        if not predictions.empty
    ]
    table = pd.concat(frames, ignore_index=True)
    return table[["level", "split", *[c for c in table.columns if c not in ("level", "split")]]]


def _split_levels(
    predictions: pd.DataFrame,
    keys: pd.DataFrame,
    metadata: dict[str, Any],
    evaluation: dict,
    reporting: dict,
) -> pd.DataFrame:
    """Every level's rows of one split's predictions (a ``level`` column first)."""
    frames = []
    for level, columns in evaluation["levels"].items():
        table = level_table(
            predictions,
            keys,
            level,
            columns,
            metadata["class_names"],
            reporting["positive_class"],
            evaluation["level_aggregation"],
            evaluation["level_label"],
        )
        frames.append(table.assign(level=level))
    return pd.concat(frames, ignore_index=True)


def _rows(table: pd.DataFrame, level: str, split: str) -> pd.DataFrame:
    return table[(table["level"] == level) & (table["split"] == split)]


def choose_level_operating_points(
    val_predictions: pd.DataFrame,
    keys: pd.DataFrame,
    operating_point: dict[str, Any],
    metadata: dict[str, Any],
    evaluation: dict,
    reporting: dict,
) -> dict[str, Any]:
    """Each level's threshold, chosen on its validation rows by ``reporting.threshold``.

    Args:
        val_predictions: The held-out predictions the image threshold is chosen on.
        keys: :func:`evaluation_keys`'s table.
        operating_point: The image level's (its threshold stands in where a level's
            validation rows are all of one class).
        metadata: The classifier's metadata (``class_names``).
        evaluation: ``levels``, ``level_aggregation`` and ``level_label``.
        reporting: ``positive_class`` and ``threshold`` (the rule).

    The rule is the image level's (:func:`.fits.operating_point.choose_operating_point`).
    A level whose validation rows are all of one class (too few patients) takes the image
    level's threshold, with a warning; ``metrics.json`` says so (``threshold_source``).

    Returns:
        ``{"aggregation", "positive_class", "levels": {<level>: {"columns", "threshold"}}}``:
        what the served model reads to answer per level.
    """
    check_positive_class(reporting["positive_class"], metadata["class_names"])
    val = _split_levels(val_predictions, keys, metadata, evaluation, reporting)
    levels = {}
    for level, columns in evaluation["levels"].items():
        rows = val[val["level"] == level]
        if _has_both_classes(rows, reporting["positive_class"]):
            threshold = choose_operating_point(rows, metadata, reporting)["threshold"]
        else:
            threshold = float(operating_point["threshold"])
            logger.warning(
                "The validation split's %d %s(s) are all of one class: the %s level takes the "
                "image level's threshold %.4f",
                len(rows),
                level,
                level,
                threshold,
            )
        levels[level] = {"columns": list(columns), "threshold": float(threshold)}
    return {
        "aggregation": evaluation["level_aggregation"],
        "positive_class": reporting["positive_class"],
        "levels": levels,
    }


def _has_both_classes(rows: pd.DataFrame, positive: str) -> bool:
    is_positive = (rows["label"] == positive).to_numpy()
    return bool(is_positive.any() and not is_positive.all())


def level_figures(
    table: pd.DataFrame,
    threshold: float,
    class_names: list[str],
    positive: str,
    params: dict,
    per_patient: bool = False,
) -> dict[str, Any]:
    """AUROC with interval, the figures at ``threshold``, Brier score and ECE of one table.

    Args:
        table: One row per key (:func:`level_predictions`'s rows of one level and split) or
            per image; its ``cluster`` column (else ``group``), when present, makes the
            bootstrap resample patients.
        threshold: The operating threshold on p(``positive``).
        class_names: The model's classes.
        positive: ``reporting.positive_class``.
        params: The ``reporting`` parameters (``bootstrap``, ``calibration_bins``).
        per_patient: Whether each row is a patient or part of one (the level's columns hold
            ``group``): resampling the rows then resamples patients.

    Returns:
        ``n``, ``auroc`` and ``auroc_positive`` with their intervals, ``threshold``,
        ``sensitivity``, ``specificity``, ``ppv``, ``npv``, ``f1``, the confusion counts,
        ``brier_score`` with its interval, ``ece_positive`` and ``bootstrap``: ``cluster``
        when patients are resampled (``per_patient``, or several rows share a patient),
        else ``image``.
    """
    y, proba = as_arrays(table, class_names)
    pos = class_names.index(positive)
    cluster = next((c for c in ("cluster", GROUP_COLUMN) if c in table.columns), None)
    groups = table[cluster].astype(str).to_numpy() if cluster else None
    ci = m.summary_intervals(y, proba, pos, **params["bootstrap"], groups=groups)
    return {
        "n": len(table),
        "auroc": m.auroc(y, proba),
        "auroc_positive": m.binary_auroc(y == pos, proba[:, pos]),
        **ci,
        "threshold": float(threshold),
        **m.binary_counts(y == pos, proba[:, pos] >= threshold),
        "brier_score": m.brier_score(y, proba),
        "ece_positive": m.binned_ece(y == pos, proba[:, pos], params["calibration_bins"]),
        "bootstrap": "cluster" if per_patient else m.bootstrap_kind(groups),
    }


def level_metrics(
    level_predictions: pd.DataFrame,
    level_operating_points: dict[str, Any],
    metadata: dict[str, Any],
    evaluation: dict,
    reporting: dict,
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The ``levels`` block of ``metrics.json`` and its MLflow metrics.

    Returns:
        ``(levels, mlflow_metrics)``: per level, its ``columns``, ``aggregation``,
        ``label_rule``, ``threshold_source``, ``n_val``, ``n_images``, the test figures of
        :func:`level_figures` and ``external`` (the same on the external site, ``None``
        without one); ``test.<level>.<name>`` and ``external.<level>.<name>`` for MLflow.
    """
    names, positive = metadata["class_names"], reporting["positive_class"]
    levels, tracked = {}, {}
    for level, point in level_operating_points["levels"].items():
        per_patient = GROUP_COLUMN in point["columns"]
        val, test = (_rows(level_predictions, level, s) for s in ("val", "test"))
        external = _rows(level_predictions, level, EXTERNAL_SPLIT)
        block = {
            "columns": point["columns"],
            "aggregation": level_operating_points["aggregation"],
            "label_rule": evaluation["level_label"],
            "threshold_source": "validation"
            if _has_both_classes(val, positive)
            else "image level (validation rows of one class)",
            "n_val": len(val),
            "n_images": int(test["n_images"].sum()),
            **level_figures(test, point["threshold"], names, positive, reporting, per_patient),
        }
        block["external"] = (
            None
            if external.empty
            else level_figures(
                external, point["threshold"], names, positive, reporting, per_patient
            )
        )
        _log_level(level, block)
        tracked |= m.tracked_metrics(f"test.{level}", block)
        tracked |= m.tracked_metrics(f"external.{level}", block["external"] or {})
        levels[level] = block
    return m.json_safe(levels), tracked


def _log_level(level: str, block: dict[str, Any]) -> None:
    logger.info(
        "Test, %s level (%d keys, %d images): AUROC %.3f [%.3f, %.3f] (%s bootstrap); at "
        "p >= %.3f sensitivity %.3f, specificity %.3f",
        level,
        block["n"],
        block["n_images"],
        block["auroc"],
        block["auroc_ci_low"],
        block["auroc_ci_high"],
        block["bootstrap"],
        block["threshold"],
        block["sensitivity"],
        block["specificity"],
    )
