"""What the data gate checks: the manifest's schema, the checks' settings, tables and expectations.

Every check is a Great Expectations expectation. Checks about single images run on the manifest
itself (table ``images``, one row per image). Checks about the dataset as a whole run on small
tables derived from the manifest with pandas (``class_counts``: one row per split and label,
``image_hashes``: one row per pixel hash, ...), so that leakage, balance and drift are plain column
expectations too and their results and Data Docs come from GX.

Great Expectations is imported inside functions: importing it takes seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from breast_cancer_pipeline.manifest import REQUIRED_COLUMNS, SPLITS

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

NUMERIC_COLUMNS = ("width", "height", "channels", "mean", "std")
SEVERITIES = ("error", "warning")

# Check name -> what it guards against; the name is the key in `validation.severity`.
CHECKS: dict[str, str] = {
    "manifest_not_empty": "The manifest lists at least one image.",
    "required_columns_present": "The manifest has every column the pipeline reads.",
    "required_columns_not_null": "No image has a missing value in a required column.",
    "path_unique": "Every image path appears once (no image listed twice).",
    "splits_in_set": f"Every image is in one of the splits {list(SPLITS)}.",
    "labels_in_set": "Every label is one of `validation.expected_labels`.",
    "min_images_per_class": (
        "Every class has at least `validation.min_per_class` images in every split "
        "(a class missing from a split counts 0)."
    ),
    "class_imbalance": (
        "In train, the largest class is at most `validation.max_imbalance` times the smallest."
    ),
    "min_image_size": "Width and height are at least `validation.min_size` pixels.",
    "single_channel_count": (
        "Every image has the dataset's most common channel count (one channel count in all)."
    ),
    "sha256_in_one_split": (
        "No decoded image (sha256 of its pixels) is in two splits: a test image seen in training "
        "inflates every score."
    ),
    "sha256_in_one_label": "No decoded image (sha256 of its pixels) carries two labels.",
    "group_in_one_split": (
        "No patient/group has images in two splits: images of one patient leak across splits."
    ),
    "split_proportions": (
        "Each split's share of images is within `validation.split_tolerance` of "
        "`ingestion.split.ratios` (skipped when the provider made the split)."
    ),
    "no_blank_images": (
        "No constant or nearly blank image: per-image intensity std is at least "
        "`validation.min_std` (0-255 scale)."
    ),
    "intensity_drift": (
        "Each split's mean intensity is within `validation.drift_max_shift` train standard "
        "deviations (of the per-image means) of train's."
    ),
}


@dataclass(frozen=True)
class GateSettings:
    """The validated `validation` parameters, plus the split ratios from `ingestion`."""

    expected_labels: tuple[str, ...] | None
    min_per_class: int
    max_imbalance: float
    min_size: int
    split_tolerance: float
    min_std: float
    drift_max_shift: float
    report_path: str
    severity: dict[str, str]
    split_ratios: dict[str, float]


@dataclass(frozen=True)
class Table:
    """A table the checks run on: the manifest itself or one derived from it.

    Attributes:
        name: The GX data asset and suite name.
        frame: The rows GX validates, with a default ``RangeIndex``.
        key_column: The column that names a row in messages (``path`` for the manifest).
        paths: For derived tables, the image paths behind each row's key.
    """

    name: str
    frame: pd.DataFrame
    key_column: str
    paths: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One named check: one or more GX expectations on one table, with one severity.

    Attributes:
        name: The check's name, also its key in `validation.severity`.
        table: The name of the table it runs on.
        severity: ``error`` or ``warning``.
        expectations: The GX expectations; the check fails if any of them fails.
        rules: What each expectation requires, with the configured thresholds, in words.
    """

    name: str
    table: str
    severity: str
    expectations: tuple[Expectation, ...]
    rules: tuple[str, ...]


def parse_settings(validation: Mapping[str, Any], ingestion: Mapping[str, Any]) -> GateSettings:
    """Validates the gate's parameters before any data is looked at.

    Args:
        validation: ``params:validation``.
        ingestion: ``params:ingestion``; only ``split.ratios`` is read.

    Returns:
        The settings, with the configured split proportions keyed by split name. A two-way
        ratio ``[train, test]`` (validation carved out of train by ingestion) is keyed
        ``train+val`` and ``test``.

    Raises:
        ValueError: If a parameter is missing or out of range; the message names it.
    """
    severity = validation.get("severity")
    if not isinstance(severity, Mapping):
        raise ValueError(
            "validation.severity must map each expectation name to 'error' or 'warning'; "
            f"expectation names: {', '.join(CHECKS)}."
        )
    unknown = sorted(set(severity) - set(CHECKS))
    if unknown:
        raise ValueError(
            f"validation.severity.{unknown[0]}: unknown expectation name. "
            f"Known names: {', '.join(CHECKS)}."
        )
    for name in CHECKS:
        value = severity.get(name)
        if value not in SEVERITIES:
            raise ValueError(
                f"validation.severity.{name} must be 'error' or 'warning', got {value!r}."
            )

    labels = validation.get("expected_labels")
    if labels is not None and (
        isinstance(labels, str)
        or not isinstance(labels, Sequence)
        or not labels
        or not all(isinstance(label, str) and label for label in labels)
        or len(set(labels)) != len(labels)
    ):
        raise ValueError(
            "validation.expected_labels must be null (accept any label) or a list of distinct "
            f"label names such as [benign, malignant], got {labels!r}."
        )

    report_path = validation.get("report_path")
    if not isinstance(report_path, str) or not report_path:
        raise ValueError(
            "validation.report_path must be the path of the validation report, as saved by "
            f"the catalog entry `validation_report`, got {report_path!r}."
        )

    return GateSettings(
        expected_labels=tuple(labels) if labels is not None else None,
        min_per_class=int(_number(validation, "min_per_class", low=0, integer=True)),
        max_imbalance=_number(validation, "max_imbalance", low=1),
        min_size=int(_number(validation, "min_size", low=1, integer=True)),
        split_tolerance=_number(validation, "split_tolerance", low=0, high=1),
        min_std=_number(validation, "min_std", low=0),
        drift_max_shift=_number(validation, "drift_max_shift", low=0),
        report_path=report_path,
        severity={name: severity[name] for name in CHECKS},
        split_ratios=_split_ratios(ingestion),
    )


def _number(
    params: Mapping[str, Any],
    key: str,
    *,
    low: float,
    high: float = math.inf,
    integer: bool = False,
) -> float:
    value = params.get(key)
    kind = "an integer" if integer else "a number"
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if not valid or (integer and value != int(value)) or not low <= value <= high:
        bounds = f">= {low}" if high == math.inf else f"between {low} and {high}"
        raise ValueError(f"validation.{key} must be {kind} {bounds}, got {value!r}.")
    return float(value)


def _split_ratios(ingestion: Mapping[str, Any]) -> dict[str, float]:
    split = ingestion.get("split") if isinstance(ingestion, Mapping) else None
    ratios = split.get("ratios") if isinstance(split, Mapping) else None
    valid = (
        isinstance(ratios, Sequence)
        and not isinstance(ratios, str)
        and len(ratios) in (2, 3)
        and all(isinstance(r, int | float) and not isinstance(r, bool) and r > 0 for r in ratios)
        and math.isclose(sum(ratios), 1.0, abs_tol=1e-6)
    )
    if not valid:
        raise ValueError(
            "ingestion.split.ratios must be [train, test] or [train, val, test], positive and "
            f"summing to 1, got {ratios!r}."
        )
    names = ("train+val", "test") if len(ratios) == 2 else SPLITS
    return {name: float(ratio) for name, ratio in zip(names, ratios, strict=True)}


def build_tables(manifest: pd.DataFrame, settings: GateSettings) -> dict[str, Table]:
    """Derives, with pandas, the tables the checks run on.

    Args:
        manifest: One row per image (see the ingestion pipeline).
        settings: The gate's settings.

    Returns:
        The tables by name: ``images`` (the manifest as given), ``class_counts``,
        ``train_class_balance``, ``image_hashes``, ``groups``, ``split_proportions`` and
        ``split_intensity``. Derived tables are computed from a copy of the manifest in which
        missing required columns are empty and numeric columns are numbers, so that a broken
        manifest fails checks instead of raising.
    """
    images = manifest.reset_index(drop=True)
    frame = images.copy()
    for column in REQUIRED_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    for column in NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")

    tables = [
        Table("images", images, "path"),
        _class_counts(frame, settings),
        _train_class_balance(frame, settings),
        _by_key(frame, "image_hashes", "sha256"),
        _by_key(frame, "groups", "group"),
        _split_proportions(frame, settings),
        _split_intensity(frame),
    ]
    return {table.name: table for table in tables}


def _labels(frame: pd.DataFrame, settings: GateSettings) -> list[str]:
    if settings.expected_labels is not None:
        return list(settings.expected_labels)
    return sorted(frame["label"].dropna().astype(str).unique())


def _class_counts(frame: pd.DataFrame, settings: GateSettings) -> Table:
    counts = frame.groupby(["split", "label"]).size()
    rows = [
        {
            "key": f"{split}/{label}",
            "split": split,
            "label": label,
            "n_images": int(counts.get((split, label), 0)),
        }
        for split in SPLITS
        for label in _labels(frame, settings)
    ]
    columns = ["key", "split", "label", "n_images"]
    return Table("class_counts", pd.DataFrame(rows, columns=columns), "key")


def _train_class_balance(frame: pd.DataFrame, settings: GateSettings) -> Table:
    train = frame.loc[frame["split"] == "train", "label"].astype(str).value_counts()
    train = train[train.index.isin(_labels(frame, settings))]
    if train.empty:
        row = {"key": "train: no classes", "imbalance_ratio": math.nan}
    else:
        largest, smallest = train.idxmax(), train.idxmin()
        row = {
            "key": f"train: {largest}={train[largest]} vs {smallest}={train[smallest]}",
            "largest_class": largest,
            "n_largest": int(train[largest]),
            "smallest_class": smallest,
            "n_smallest": int(train[smallest]),
            "imbalance_ratio": float(train[largest] / train[smallest]),
        }
    return Table("train_class_balance", pd.DataFrame([row]), "key")


def _by_key(frame: pd.DataFrame, name: str, column: str) -> Table:
    """One row per value of `column` (a pixel hash or a group): splits and labels it spans."""
    keyed = frame.dropna(subset=[column]).astype({column: str})
    grouped = keyed.groupby(column, sort=True)
    table = pd.DataFrame(
        {
            "key": list(grouped.groups),
            "n_images": grouped.size().to_numpy(),
            "n_splits": grouped["split"].nunique().to_numpy(),
            "n_labels": grouped["label"].nunique().to_numpy(),
            "splits": grouped["split"].agg(_joined).to_numpy(),
            "labels": grouped["label"].agg(_joined).to_numpy(),
        },
        columns=["key", "n_images", "n_splits", "n_labels", "splits", "labels"],
    )
    paths = {
        str(key): [str(path) for path in group] for key, group in grouped["path"] if len(group) > 1
    }
    return Table(name, table, "key", paths)


def _joined(values: pd.Series) -> str:
    return ",".join(sorted(values.dropna().astype(str).unique()))


def _split_proportions(frame: pd.DataFrame, settings: GateSettings) -> Table:
    split = frame["split"]
    counts = {
        "train+val": int(split.isin(["train", "val"]).sum()),
        **{name: int((split == name).sum()) for name in SPLITS},
    }
    total = sum(counts[name] for name in SPLITS)
    rows = []
    for name, ratio in settings.split_ratios.items():
        observed = counts[name] / total if total else math.nan
        rows.append(
            {
                "key": name,
                "n_images": counts[name],
                "observed_fraction": observed,
                "configured_fraction": ratio,
                "deviation": abs(observed - ratio),
            }
        )
    return Table("split_proportions", pd.DataFrame(rows), "key")


def _split_intensity(frame: pd.DataFrame) -> Table:
    means = frame.groupby("split")["mean"]
    train = frame.loc[frame["split"] == "train", "mean"].dropna()
    train_mean, train_sd = train.mean(), train.std(ddof=1)
    rows = []
    for split in SPLITS:
        if split not in means.groups:
            continue
        split_mean = float(means.get_group(split).mean())
        shift = abs(split_mean - train_mean) / train_sd if train_sd > 0 else math.nan
        rows.append(
            {
                "key": split,
                "n_images": int(means.get_group(split).size),
                "mean_intensity": split_mean,
                "shift_in_train_sd": shift,
            }
        )
    columns = ["key", "n_images", "mean_intensity", "shift_in_train_sd"]
    return Table("split_intensity", pd.DataFrame(rows, columns=columns), "key")


def build_checks(
    tables: Mapping[str, Table], settings: GateSettings
) -> tuple[list[Check], dict[str, str]]:
    """Builds the GX expectations of every check that applies to this manifest.

    Each expectation's GX ``description`` (the line Data Docs show) is the check's name, severity
    and rule with its threshold; its ``notes`` say why the check exists.

    Args:
        tables: The output of `build_tables`.
        settings: The gate's settings.

    Returns:
        The checks to run, and the skipped checks with the reason they were skipped.
    """
    import great_expectations as gx

    expect = gx.expectations
    images = tables["images"].frame
    channels = images["channels"].dropna() if "channels" in images.columns else pd.Series()
    common_channels = [] if channels.empty else [int(channels.mode().iloc[0])]
    ratios = ", ".join(f"{name} {ratio:g}" for name, ratio in settings.split_ratios.items())
    between = expect.ExpectColumnValuesToBeBetween
    in_set = expect.ExpectColumnValuesToBeInSet
    # (check name, table, [(expectation class, its arguments, the rule in words)])
    specs: list[tuple[str, str, list[tuple[type[Expectation], dict[str, Any], str]]]] = [
        (
            "manifest_not_empty",
            "images",
            [(expect.ExpectTableRowCountToBeBetween, {"min_value": 1}, "at least 1 image")],
        ),
        (
            "required_columns_present",
            "images",
            [
                (
                    expect.ExpectTableColumnsToMatchSet,
                    {"column_set": list(REQUIRED_COLUMNS), "exact_match": False},
                    f"columns include {', '.join(REQUIRED_COLUMNS)}",
                )
            ],
        ),
        (
            "required_columns_not_null",
            "images",
            [
                (
                    expect.ExpectColumnValuesToNotBeNull,
                    {"column": column},
                    f"{column} is never null",
                )
                for column in REQUIRED_COLUMNS
                if column in images.columns
            ],
        ),
        (
            "path_unique",
            "images",
            [(expect.ExpectColumnValuesToBeUnique, {"column": "path"}, "each path appears once")],
        ),
        (
            "splits_in_set",
            "images",
            [
                (
                    in_set,
                    {"column": "split", "value_set": list(SPLITS)},
                    f"split is one of {', '.join(SPLITS)}",
                )
            ],
        ),
        (
            "min_image_size",
            "images",
            [
                (
                    between,
                    {"column": column, "min_value": settings.min_size},
                    f"{column} ≥ {settings.min_size} px",
                )
                for column in ("width", "height")
            ],
        ),
        (
            "single_channel_count",
            "images",
            [
                (
                    in_set,
                    {"column": "channels", "value_set": common_channels},
                    f"channels = {common_channels[0] if common_channels else '?'} "
                    "(the most common count)",
                )
            ],
        ),
        (
            "no_blank_images",
            "images",
            [
                (
                    between,
                    {"column": "std", "min_value": settings.min_std},
                    f"per-image intensity std ≥ {settings.min_std:g}",
                )
            ],
        ),
        (
            "min_images_per_class",
            "class_counts",
            [
                (
                    between,
                    {"column": "n_images", "min_value": settings.min_per_class},
                    f"n_images ≥ {settings.min_per_class} for every split and class",
                )
            ],
        ),
        (
            "class_imbalance",
            "train_class_balance",
            [
                (
                    between,
                    {"column": "imbalance_ratio", "max_value": settings.max_imbalance},
                    f"largest / smallest train class ≤ {settings.max_imbalance:g}",
                )
            ],
        ),
        (
            "sha256_in_one_split",
            "image_hashes",
            [(between, {"column": "n_splits", "max_value": 1}, "each sha256 in ≤ 1 split")],
        ),
        (
            "sha256_in_one_label",
            "image_hashes",
            [(between, {"column": "n_labels", "max_value": 1}, "each sha256 under ≤ 1 label")],
        ),
        (
            "group_in_one_split",
            "groups",
            [(between, {"column": "n_splits", "max_value": 1}, "each group in ≤ 1 split")],
        ),
        (
            "intensity_drift",
            "split_intensity",
            [
                (
                    between,
                    {"column": "shift_in_train_sd", "max_value": settings.drift_max_shift},
                    f"|split mean - train mean| ≤ {settings.drift_max_shift:g} train SD",
                )
            ],
        ),
    ]

    skipped: dict[str, str] = {}
    if settings.expected_labels is None:
        skipped["labels_in_set"] = "validation.expected_labels is null"
    else:
        labels = list(settings.expected_labels)
        rule = f"label is one of {', '.join(labels)}"
        specs.insert(
            5,
            ("labels_in_set", "images", [(in_set, {"column": "label", "value_set": labels}, rule)]),
        )

    if "split_origin" in images.columns and (images["split_origin"] == "provider").any():
        skipped["split_proportions"] = "the dataset provider made the split (split_origin)"
    else:
        deviation = {"column": "deviation", "max_value": settings.split_tolerance}
        rule = f"|share - configured share| ≤ {settings.split_tolerance:g} (configured {ratios})"
        specs.append(("split_proportions", "split_proportions", [(between, deviation, rule)]))

    checks = []
    for name, table, expectations in specs:
        severity = settings.severity[name]
        built = tuple(
            cls(
                **kwargs,
                description=f"{name} ({severity}): {rule}",
                notes=CHECKS[name],
                meta={"check": name},
                severity="critical" if severity == "error" else "warning",
            )
            for cls, kwargs, rule in expectations
        )
        rules = tuple(rule for _, _, rule in expectations)
        checks.append(Check(name, table, severity, built, rules))
    return checks, skipped
