"""What the data gate checks: the checks as a table, the tables they run on, their expectations.

Every check is a Great Expectations expectation. Checks about single images run on the manifest
itself (table ``images``, one row per image). Checks about the dataset as a whole run on small
tables derived from the manifest with pandas (``class_counts``: one row per split and label,
``image_hashes``: one row per pixel hash, ...), so that leakage, balance and drift are plain column
expectations too and their results and Data Docs come from GX.

:data:`SPECS` is the one list of checks: for each, the table it runs on, why it exists and the
expectations it builds from the settings. Its names are the keys of ``validation.severity``
(see ``parameters.py``).

Great Expectations is imported inside functions: importing it takes seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from breast_cancer_pipeline.manifest import (
    DESCRIPTIVE_COLUMNS,
    EXTERNAL_SPLIT,
    MANIFEST_SPLITS,
    NUMERIC_COLUMNS,
    NUMERIC_DESCRIPTIVE_COLUMNS,
    REQUIRED_COLUMNS,
    SPLITS,
    expected_split_shares,
)
from breast_cancer_pipeline.param_schema import validate_block

from .mask_checks import mask_specs, mask_tables

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

    from .parameters import ValidationParams

#: One expectation of a check: (GX expectation class name, its arguments, the rule in words).
Rule = tuple[str, dict[str, Any], str]

_SIZE_COLUMNS = ("width", "height")
#: The range of ``patient_age``, in years.
_AGE_RANGE = (0, 130)
#: A number as text (``57``, ``57.5``): the type of the numeric descriptive columns.
_NUMBER = r"^\d+(?:\.\d+)?$"


@dataclass(frozen=True)
class GateSettings:
    """The validated ``validation`` parameters, plus the split shares ``ingestion`` aims at.

    Attributes:
        params: The ``validation`` block, validated by its model.
        split_shares: The configured share of each split (``manifest.expected_split_shares``).
    """

    params: ValidationParams
    split_shares: dict[str, float]
    has_masks: bool = False
    mask_labels: bool = False


def gate_settings(
    validation: Mapping[str, Any],
    ingestion: Mapping[str, Any],
    augmentation: Mapping[str, Any] | None = None,
) -> GateSettings:
    """Validates the gate's parameters before any data is looked at.

    Args:
        validation: ``params:validation``.
        ingestion: ``params:ingestion``; ``split.ratios`` and ``split.val_from_train``, and
            whether masks are paired (``mask_pattern``, ``csv.mask_column``).
        augmentation: ``params:augmentation``: whether tiles take their labels from masks
            (``tiles.labels: mask``); None: they do not.

    Returns:
        The settings.

    Raises:
        ParameterError: If a ``validation`` parameter is missing or invalid; the message
            names it and what is allowed.
        ValueError: If ``ingestion.split.ratios`` (or ``val_from_train``) is invalid.
    """
    params = validate_block("validation", validation)
    split = ingestion["split"]
    shares = expected_split_shares(split["ratios"], split["val_from_train"])
    masks = bool(ingestion.get("mask_pattern") or (ingestion.get("csv") or {}).get("mask_column"))
    tiles = (augmentation or {}).get("tiles") or {}
    return GateSettings(params, shares, masks, tiles.get("labels") == "mask")


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


def build_tables(
    manifest: pd.DataFrame, settings: GateSettings, masks: pd.DataFrame | None = None
) -> dict[str, Table]:
    """Derives, with pandas, the tables the checks run on.

    Args:
        manifest: One row per image (see the ingestion pipeline).
        settings: The gate's settings.
        masks: Ingestion's mask table (one row per mask file), or None: no masks.

    Returns:
        The tables by name: ``images`` (the manifest as given), ``image_columns`` (its
        descriptive columns as text, empty values null), ``column_missing`` (one row per
        column of ``validation.max_missing_share``), ``class_counts``,
        ``train_class_balance``, ``image_hashes``, ``groups``, ``split_proportions``,
        ``split_intensity``, ``external_shift`` (the external site against train),
        ``masks`` and ``lesion_images`` (:func:`.mask_checks.mask_tables`).
        Derived tables are computed from a copy of the manifest in which missing required
        columns are empty and numeric columns are numbers, so that a broken manifest fails
        checks instead of raising.
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
        _image_columns(frame, settings),
        _column_missing(frame, settings),
        _class_counts(frame, settings),
        _train_class_balance(frame, settings),
        _by_key(frame, "image_hashes", "sha256"),
        _by_key(frame, "groups", "group"),
        _split_proportions(frame, settings),
        _split_intensity(frame),
        _external_shift(frame),
        *mask_tables(frame, masks, settings),
    ]
    return {table.name: table for table in tables}


def descriptive_columns(settings: GateSettings) -> list[str]:
    """The manifest's descriptive columns and every column the parameters name, in order."""
    named = [*settings.params.allowed_values, *settings.params.max_missing_share]
    return list(dict.fromkeys([*DESCRIPTIVE_COLUMNS, *named]))


def as_text(value: Any) -> str | None:
    """A descriptive value as the gate compares it: ``None`` when empty, ``40.0`` as ``40``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _image_columns(frame: pd.DataFrame, settings: GateSettings) -> Table:
    """One row per image: its path and each descriptive column as text (null when empty).

    A column the manifest lacks is left out (``descriptive_columns_present`` names it);
    ``<column>_years`` holds each numeric column as a number.
    """
    table = pd.DataFrame({"path": frame["path"]})
    for column in descriptive_columns(settings):
        if column in frame.columns:
            table[column] = pd.Series(
                [as_text(v) for v in frame[column]], index=frame.index, dtype=object
            )
    for column in NUMERIC_DESCRIPTIVE_COLUMNS:
        if column in table.columns:
            table[f"{column}_years"] = pd.to_numeric(table[column], errors="coerce")
    return Table("image_columns", table.reset_index(drop=True), "path")


def _column_missing(frame: pd.DataFrame, settings: GateSettings) -> Table:
    """One row per column of ``validation.max_missing_share``: its share of empty values.

    A column the manifest lacks is empty for every image.
    """
    rows = []
    for column, allowed in settings.params.max_missing_share.items():
        values = frame[column] if column in frame.columns else pd.Series([None] * len(frame))
        missing = sum(as_text(v) is None for v in values)
        share = missing / len(frame) if len(frame) else 0.0
        rows.append(
            {
                "key": f"{column}: {share:.1%} empty ({missing} of {len(frame)} images), "
                f"at most {allowed:.1%} allowed",
                "column": column,
                "n_missing": missing,
                "missing_share": share,
                "max_missing_share": allowed,
                "excess": share - allowed,
            }
        )
    columns = ["key", "column", "n_missing", "missing_share", "max_missing_share", "excess"]
    return Table("column_missing", pd.DataFrame(rows, columns=columns), "key")


def _labels(frame: pd.DataFrame, settings: GateSettings) -> list[str]:
    if settings.params.expected_labels is not None:
        return list(settings.params.expected_labels)
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
        ordered = train.sort_values(kind="stable")  # a tie names two classes
        smallest, largest = ordered.index[0], ordered.index[-1]
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
    counts = frame["split"].value_counts()
    total = int(counts.reindex(list(SPLITS), fill_value=0).sum())
    rows = []
    for name, share in settings.split_shares.items():
        n_images = int(counts.get(name, 0))
        observed = n_images / total if total else math.nan
        rows.append(
            {
                "key": name,
                "n_images": n_images,
                "observed_fraction": observed,
                "configured_fraction": share,
                "deviation": abs(observed - share),
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


#: Per-image statistics the external site is compared on: (manifest column, in words).
_SHIFT_STATISTICS = (("mean", "mean intensity"), ("std", "contrast (intensity std)"))


def _external_shift(frame: pd.DataFrame) -> Table:
    """The external site against train: how far its per-image mean and std lie from train's.

    Each shift is ``|external average - train average|`` in train standard deviations of that
    per-image statistic; one row per statistic (none without an external split).
    """
    train = frame[frame["split"] == "train"]
    external = frame[frame["split"] == EXTERNAL_SPLIT]
    rows = []
    if len(external):
        for column, words in _SHIFT_STATISTICS:
            reference, site = train[column].dropna(), external[column].dropna()
            sd = reference.std(ddof=1)
            shift = abs(site.mean() - reference.mean()) / sd if sd > 0 else math.nan
            rows.append(
                {
                    "key": f"{EXTERNAL_SPLIT}: {words}",
                    "n_images": len(site),
                    "train_average": float(reference.mean()),
                    "external_average": float(site.mean()),
                    "shift_in_train_sd": float(shift),
                }
            )
    columns = ["key", "n_images", "train_average", "external_average", "shift_in_train_sd"]
    return Table("external_shift", pd.DataFrame(rows, columns=columns), "key")


def _between(column: str, words: str, **bounds: float) -> list[Rule]:
    return [("ExpectColumnValuesToBeBetween", {"column": column, **bounds}, words)]


def _in_set(column: str, values: list[Any], words: str) -> list[Rule]:
    return [("ExpectColumnValuesToBeInSet", {"column": column, "value_set": values}, words)]


def _not_null(_: GateSettings, images: pd.DataFrame) -> list[Rule]:
    return [
        ("ExpectColumnValuesToNotBeNull", {"column": column}, f"{column} is never null")
        for column in REQUIRED_COLUMNS
        if column in images.columns
    ]


def _min_size(settings: GateSettings, _: pd.DataFrame) -> list[Rule]:
    size = settings.params.min_size
    return [
        _between(column, f"{column} ≥ {size} px", min_value=size)[0] for column in _SIZE_COLUMNS
    ]


def _one_channel_count(_: GateSettings, images: pd.DataFrame) -> list[Rule]:
    channels = images["channels"].dropna() if "channels" in images.columns else pd.Series()
    common = [] if channels.empty else [int(channels.mode().iloc[0])]
    words = f"channels = {common[0] if common else '?'} (the most common count)"
    return _in_set("channels", common, words)


def _labels_in_set(settings: GateSettings, _: pd.DataFrame) -> list[Rule]:
    labels = list(settings.params.expected_labels or [])
    return _in_set("label", labels, f"label is one of {', '.join(labels)}")


def _split_shares(settings: GateSettings, _: pd.DataFrame) -> list[Rule]:
    tolerance = settings.params.split_tolerance
    shares = ", ".join(f"{name} {share:g}" for name, share in settings.split_shares.items())
    words = f"|share - configured share| ≤ {tolerance:g} (configured {shares})"
    return _between("deviation", words, max_value=tolerance)


def _descriptive_present(settings: GateSettings, _: pd.DataFrame) -> list[Rule]:
    columns = descriptive_columns(settings)
    return [
        (
            "ExpectTableColumnsToMatchSet",
            {"column_set": columns, "exact_match": False},
            f"columns include {', '.join(columns)}",
        )
    ]


def _descriptive_types(_: GateSettings, __: pd.DataFrame) -> list[Rule]:
    low, high = _AGE_RANGE
    rules: list[Rule] = []
    for column in NUMERIC_DESCRIPTIVE_COLUMNS:
        rules.append(
            (
                "ExpectColumnValuesToMatchRegex",
                {"column": column, "regex": _NUMBER},
                f"{column} is empty or a number (years)",
            )
        )
        rules.extend(
            _between(f"{column}_years", f"{low} ≤ {column} ≤ {high}", min_value=low, max_value=high)
        )
    return rules


def _allowed_values(settings: GateSettings, _: pd.DataFrame) -> list[Rule]:
    rules: list[Rule] = []
    for column, values in settings.params.allowed_values.items():
        allowed = [as_text(value) for value in values]
        words = f"{column} is empty or one of {', '.join(allowed)}"
        rules.extend(_in_set(column, allowed, words))
    return rules


def _missing_shares(settings: GateSettings, _: pd.DataFrame) -> list[Rule]:
    limits = ", ".join(
        f"{column} {share:.0%}" for column, share in settings.params.max_missing_share.items()
    )
    return _between("excess", f"empty share ≤ validation.max_missing_share ({limits})", max_value=0)


def _no_allowed_values(settings: GateSettings, _: pd.DataFrame) -> str | None:
    return None if settings.params.allowed_values else "validation.allowed_values is empty"


def _no_missing_limits(settings: GateSettings, _: pd.DataFrame) -> str | None:
    return None if settings.params.max_missing_share else "validation.max_missing_share is empty"


def _labels_not_given(settings: GateSettings, _: pd.DataFrame) -> str | None:
    return "validation.expected_labels is null" if settings.params.expected_labels is None else None


def _no_external_split(_: GateSettings, images: pd.DataFrame) -> str | None:
    if "split" in images.columns and (images["split"] == EXTERNAL_SPLIT).any():
        return None
    return "no external test site (ingestion.external_dir is null)"


def _provider_split(_: GateSettings, images: pd.DataFrame) -> str | None:
    if "split_origin" in images.columns and (images["split_origin"] == "provider").any():
        return "the dataset provider made the split (split_origin)"
    return None


@dataclass(frozen=True)
class CheckSpec:
    """One row of :data:`SPECS`.

    Attributes:
        table: The table it runs on (a key of `build_tables`' result).
        why: What it guards against (shown in reports and Data Docs notes).
        rules: Its expectations, from the settings and the manifest.
        skip: Why it does not apply to this manifest, or ``None`` when it does.
    """

    table: str
    why: str
    rules: Callable[[GateSettings, pd.DataFrame], list[Rule]]
    skip: Callable[[GateSettings, pd.DataFrame], str | None] = lambda _s, _m: None


#: Every check, in report order: name (its key in ``validation.severity``) -> spec.
SPECS: dict[str, CheckSpec] = {
    "manifest_not_empty": CheckSpec(
        "images",
        "The manifest lists at least one image.",
        lambda s, m: [("ExpectTableRowCountToBeBetween", {"min_value": 1}, "at least 1 image")],
    ),
    "required_columns_present": CheckSpec(
        "images",
        "The manifest has every column the pipeline reads.",
        lambda s, m: [
            (
                "ExpectTableColumnsToMatchSet",
                {"column_set": list(REQUIRED_COLUMNS), "exact_match": False},
                f"columns include {', '.join(REQUIRED_COLUMNS)}",
            )
        ],
    ),
    "required_columns_not_null": CheckSpec(
        "images", "No image has a missing value in a required column.", _not_null
    ),
    "path_unique": CheckSpec(
        "images",
        "Every image path appears once (no image listed twice).",
        lambda s, m: [
            ("ExpectColumnValuesToBeUnique", {"column": "path"}, "each path appears once")
        ],
    ),
    "splits_in_set": CheckSpec(
        "images",
        f"Every image is in one of the splits {list(MANIFEST_SPLITS)}.",
        lambda s, m: _in_set(
            "split", list(MANIFEST_SPLITS), f"split is one of {', '.join(MANIFEST_SPLITS)}"
        ),
    ),
    "labels_in_set": CheckSpec(
        "images",
        "Every label is one of `validation.expected_labels`.",
        _labels_in_set,
        skip=_labels_not_given,
    ),
    "min_images_per_class": CheckSpec(
        "class_counts",
        "Every class has at least `validation.min_per_class` images in every split "
        "(a class missing from a split counts 0).",
        lambda s, m: _between(
            "n_images",
            f"n_images ≥ {s.params.min_per_class} for every split and class",
            min_value=s.params.min_per_class,
        ),
    ),
    "class_imbalance": CheckSpec(
        "train_class_balance",
        "In train, the largest class is at most `validation.max_imbalance` times the smallest.",
        lambda s, m: _between(
            "imbalance_ratio",
            f"largest / smallest train class ≤ {s.params.max_imbalance:g}",
            max_value=s.params.max_imbalance,
        ),
    ),
    "min_image_size": CheckSpec(
        "images", "Width and height are at least `validation.min_size` pixels.", _min_size
    ),
    "single_channel_count": CheckSpec(
        "images",
        "Every image has the dataset's most common channel count (one channel count in all).",
        _one_channel_count,
    ),
    "sha256_in_one_split": CheckSpec(
        "image_hashes",
        "No decoded image (sha256 of its pixels) is in two splits: a test image seen in "
        "training inflates every score.",
        lambda s, m: _between("n_splits", "each sha256 in ≤ 1 split", max_value=1),
    ),
    "sha256_in_one_label": CheckSpec(
        "image_hashes",
        "No decoded image (sha256 of its pixels) carries two labels.",
        lambda s, m: _between("n_labels", "each sha256 under ≤ 1 label", max_value=1),
    ),
    "group_in_one_split": CheckSpec(
        "groups",
        "No patient/group has images in two splits: images of one patient leak across splits.",
        lambda s, m: _between("n_splits", "each group in ≤ 1 split", max_value=1),
    ),
    "split_proportions": CheckSpec(
        "split_proportions",
        "Each split's share of images is within `validation.split_tolerance` of the share "
        "`ingestion.split.ratios` gives it (skipped when the provider made the split).",
        _split_shares,
        skip=_provider_split,
    ),
    "no_blank_images": CheckSpec(
        "images",
        "No constant or nearly blank image: per-image intensity std is at least "
        "`validation.min_std` (0-255 scale).",
        lambda s, m: _between(
            "std",
            f"per-image intensity std ≥ {s.params.min_std:g}",
            min_value=s.params.min_std,
        ),
    ),
    "intensity_drift": CheckSpec(
        "split_intensity",
        "Each split's mean intensity is within `validation.drift_max_shift` train standard "
        "deviations (of the per-image means) of train's.",
        lambda s, m: _between(
            "shift_in_train_sd",
            f"|split mean - train mean| ≤ {s.params.drift_max_shift:g} train SD",
            max_value=s.params.drift_max_shift,
        ),
    ),
    "descriptive_columns_present": CheckSpec(
        "images",
        "The manifest has the descriptive columns (laterality, view, manufacturer, "
        "patient_age, study) and every column `validation.allowed_values` and "
        "`validation.max_missing_share` name. Fix: run the ingestion pipeline again (it writes "
        "them), or name the column in `ingestion.column_patterns` or "
        "`ingestion.csv.extra_columns`.",
        _descriptive_present,
    ),
    "descriptive_column_types": CheckSpec(
        "image_columns",
        "`patient_age` is empty or a number of years between 0 and 130. Fix: a pattern or "
        "table column that gives it must give a number (`057Y`, a DICOM age, is read as 57).",
        _descriptive_types,
    ),
    "descriptive_values_allowed": CheckSpec(
        "image_columns",
        "Each column of `validation.allowed_values` holds only its listed values (or is "
        "empty). Fix: correct the pattern or table that gives the column, or add the value to "
        "`validation.allowed_values`.",
        _allowed_values,
        skip=_no_allowed_values,
    ),
    "descriptive_missing_share": CheckSpec(
        "column_missing",
        "Each column of `validation.max_missing_share` is empty for at most that share of "
        "the images. Fix: give the column where it is missing (the DICOM tag, "
        "`ingestion.column_patterns`, `ingestion.csv.extra_columns`) or raise "
        "`validation.max_missing_share.<column>`.",
        _missing_shares,
        skip=_no_missing_limits,
    ),
    "external_drift": CheckSpec(
        "external_shift",
        "The external test site's mean intensity and contrast are within "
        "`validation.drift_max_shift` train standard deviations of train's. A site that "
        "differs is what an external test is for: by default this warns and does not stop.",
        lambda s, m: _between(
            "shift_in_train_sd",
            f"|external average - train average| ≤ {s.params.drift_max_shift:g} train SD",
            max_value=s.params.drift_max_shift,
        ),
        skip=_no_external_split,
    ),
}

#: The mask checks (:mod:`.mask_checks`): one severity for all, ``validation.masks.severity``.
MASK_SPECS: dict[str, CheckSpec] = mask_specs(CheckSpec)

#: Check name -> what it guards against (the checks of ``validation.severity``).
CHECKS: dict[str, str] = {name: spec.why for name, spec in SPECS.items()}

#: Every check's name -> what it guards against, the mask checks included.
ALL_CHECKS: dict[str, str] = {**CHECKS, **{n: spec.why for n, spec in MASK_SPECS.items()}}


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

    images = tables["images"].frame
    checks, skipped = [], {}
    for name, spec in {**SPECS, **MASK_SPECS}.items():
        reason = spec.skip(settings, images)
        if reason is not None:
            skipped[name] = reason
            continue
        if name in MASK_SPECS:
            severity = settings.params.masks.severity
        else:
            severity = getattr(settings.params.severity, name)
        rules = spec.rules(settings, images)
        built = tuple(
            getattr(gx.expectations, kind)(
                **kwargs,
                description=f"{name} ({severity}): {words}",
                notes=spec.why,
                meta={"check": name},
                severity="critical" if severity == "error" else "warning",
            )
            for kind, kwargs, words in rules
        )
        checks.append(Check(name, spec.table, severity, built, tuple(w for _, _, w in rules)))
    return checks, skipped
