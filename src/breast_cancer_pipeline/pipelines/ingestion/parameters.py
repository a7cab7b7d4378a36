"""The ``ingestion`` parameters (defaults: ``conf/base/parameters_ingestion.yml``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from breast_cancer_pipeline.columns import check_tag, compile_pattern
from breast_cancer_pipeline.manifest import RESERVED_COLUMNS, expected_split_shares
from breast_cancer_pipeline.param_schema import Params

from .mask_pairing import check_pattern


def _check_column(column: Any) -> str:
    """A descriptive column's name: text, not one that ingestion sets itself."""
    if not isinstance(column, str) or not column.strip():
        raise ValueError(f"column names must be non-empty text, got {column!r}")
    if column in RESERVED_COLUMNS:
        raise ValueError(
            f"{column!r} is a column ingestion sets itself ({', '.join(sorted(RESERVED_COLUMNS))}"
            "); name the column otherwise (labels: ingestion.label_pattern or "
            "ingestion.csv.label_column)"
        )
    return column


class CsvParams(Params):
    """A table (CSV or parquet) that names the images: layout ``csv``."""

    #: File(s) relative to ``source_dir``; a glob joins several.
    path: str | None
    #: Column of image paths, relative to ``source_dir``.
    path_column: str | None
    #: Column of labels; null: ``label_pattern`` or the parent folder.
    label_column: str | None
    #: Column of patient/group ids; null: ``group_pattern`` or one group per image.
    group_column: str | None
    #: Column of the provider's split; null: a seeded split.
    split_column: str | None
    #: When an image has rows with different labels, the first of these that it has wins.
    label_priority: list[str] | None
    #: Manifest column -> table column copied into it (e.g. ``{density: breast_density}``).
    extra_columns: dict[str, str]
    #: Column of each row's lesion mask file (CBIS-DDSM's ROI mask); null: none.
    mask_column: str | None

    @field_validator("extra_columns")
    @classmethod
    def _extra_names(cls, columns: dict[str, str]) -> dict[str, str]:
        for column in columns:
            if column == "group":
                raise ValueError(
                    "the patient/group id comes from ingestion.csv.group_column, not extra_columns"
                )
            _check_column(column)
        return columns


class TagPattern(Params):
    """A regex with one group applied to the value of a DICOM tag."""

    #: The DICOM keyword, e.g. ``PatientID``.
    tag: str
    #: Regex with one group, searched in the tag's value.
    pattern: str


class SplitParams(Params):
    """How images are assigned to train / val / test when the provider did not split them."""

    #: ``[train, test]`` or ``[train, val, test]``, positive, summing to 1.
    ratios: list[float]
    #: With two ratios: the share of train groups that becomes val, in (0, 1).
    val_from_train: float
    #: Seed of the grouped, stratified split.
    seed: int

    @model_validator(mode="after")
    def _shares(self) -> SplitParams:
        # The one rule for ratios (manifest.py); its message names the parameter.
        expected_split_shares(self.ratios, self.val_from_train)
        return self


class IngestionParams(Params):
    """A folder of images in any common layout -> PNGs and a manifest with splits."""

    #: Folder of training images (``globals.source_dir`` by default).
    source_dir: str
    #: Folder of an external test site (split ``external``); null: none.
    external_dir: str | None
    #: How labels (and provider splits) are read from the folder.
    layout: Literal["auto", "class_folders", "presplit", "csv"]
    #: Regex with one group, applied to the relative path, giving the label.
    label_pattern: str | None
    #: Regex with one group giving the patient/group id.
    group_pattern: str | None
    #: Manifest column -> regex with one group on the relative path, or ``{tag, pattern}``
    #: on a DICOM tag; ``group`` sets the patient id (instead of ``group_pattern``).
    column_patterns: dict[str, str | TagPattern]
    #: Renames or merges classes (after reading them).
    label_map: dict[str, str]
    #: Globs of files left out (on the relative path or the file name).
    exclude: list[str]
    #: Globs of the only files taken in; null: every image file.
    include: list[str] | None
    #: A mask's path relative to its image's folder, ``{stem}`` the image's name without
    #: extension (``{stem}_mask*.png``); null: no masks.
    mask_pattern: str | None
    csv: CsvParams
    #: The channels every image is converted to.
    color_mode: Literal["grayscale", "rgb"]
    #: Decompression-bomb guard: images with more pixels are bad files; null: no limit.
    max_pixels: PositiveInt | None
    #: Memory one image's decode may hold, in bytes (from the header); null: no limit.
    max_decoded_bytes: PositiveInt | None
    #: Percentiles of the non-background pixels mapped to 0 and 255 (high-bit-depth images).
    window_percentiles: tuple[float, float]
    #: Multi-page TIFF / multi-frame DICOM: first page (warned), every page, or a bad file.
    multipage: Literal["first", "all", "error"]
    #: Ingest files that symbolic links lead to outside ``source_dir``.
    follow_external_links: bool
    #: ``fail``: stop and list every bad file; ``skip``: ingest the rest, list them.
    on_bad_file: Literal["fail", "skip"]
    #: Conversion processes: ``auto`` or a number.
    workers: Literal["auto"] | PositiveInt
    #: With ``workers: auto``: one worker per this many images (up to one per core).
    images_per_worker: PositiveInt
    #: Conversions in flight per worker (bounds memory).
    tasks_per_worker: PositiveInt
    #: zlib level of the PNGs (lossless at every level).
    png_compress_level: int = Field(ge=0, le=9)
    #: Seconds between two progress lines of the conversion.
    progress_seconds: float = Field(ge=0)
    split: SplitParams

    @field_validator("label_pattern", "group_pattern")
    @classmethod
    def _one_group(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            compile_pattern(pattern)
        return pattern

    @field_validator("mask_pattern")
    @classmethod
    def _mask_pattern(cls, pattern: str | None) -> str | None:
        return None if pattern is None else check_pattern(pattern)

    @field_validator("column_patterns", mode="before")
    @classmethod
    def _patterns(cls, patterns: Any) -> Any:
        if not isinstance(patterns, Mapping):
            return patterns  # the type check names it
        for column, spec in patterns.items():
            _check_column(column)
            try:
                _check_spec(spec)
            except ValueError as exc:
                raise ValueError(f"column {column!r}: {exc}") from None
        return patterns

    @field_validator("window_percentiles")
    @classmethod
    def _window(cls, window: tuple[float, float]) -> tuple[float, float]:
        low, high = window
        if not 0 <= low < high <= 100:
            raise ValueError("must be [low, high] with 0 <= low < high <= 100, e.g. [0.5, 99.5]")
        return window

    @model_validator(mode="after")
    def _csv_layout(self) -> IngestionParams:
        if self.layout == "csv" and not self.csv.path:
            raise ValueError(
                "ingestion.layout is 'csv' but ingestion.csv.path is not set; give the CSV or "
                "parquet file (relative to ingestion.source_dir), e.g. "
                "--params ingestion.csv.path=labels.csv"
            )
        csv_layout = self.layout == "csv" or (self.layout == "auto" and self.csv.path)
        if csv_layout and not self.csv.path_column:
            raise ValueError(
                "ingestion.csv.path is set but ingestion.csv.path_column is not: name the "
                "column of image paths"
            )
        return self

    @model_validator(mode="after")
    def _one_source_per_column(self) -> IngestionParams:
        both = sorted(set(self.column_patterns) & set(self.csv.extra_columns))
        if both:
            raise ValueError(
                f"ingestion.column_patterns and ingestion.csv.extra_columns both set {both}; "
                "keep one source per column"
            )
        if "group" in self.column_patterns:
            other = {
                "ingestion.group_pattern": self.group_pattern,
                "ingestion.csv.group_column": self.csv.group_column,
            }
            for name, value in other.items():
                if value:
                    raise ValueError(
                        f"ingestion.column_patterns.group and {name} both set the patient/group "
                        f"id; keep one (set {name}: null, or remove column_patterns.group)"
                    )
        return self


def _check_spec(spec: Any) -> None:
    """One ``column_patterns`` entry: a regex, or ``{tag: <keyword>, pattern: <regex>}``."""
    if isinstance(spec, str):
        compile_pattern(spec)
        return
    if not isinstance(spec, Mapping) or set(spec) != {"tag", "pattern"}:
        raise ValueError(
            "give a regex with one group (searched in the path relative to the source "
            "folder) or {tag: <DICOM keyword>, pattern: <regex>}, e.g. "
            "{tag: PatientID, pattern: '_(CC|MLO)$'}; got " + repr(spec)
        )
    check_tag(spec["tag"])
    compile_pattern(spec["pattern"])


SCHEMA = IngestionParams
