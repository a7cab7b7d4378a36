"""The ``ingestion`` parameters (defaults: ``conf/base/parameters_ingestion.yml``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from breast_cancer_pipeline.manifest import expected_split_shares
from breast_cancer_pipeline.param_schema import Params


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
    #: Renames or merges classes (after reading them).
    label_map: dict[str, str]
    #: Globs of files left out (on the relative path or the file name).
    exclude: list[str]
    #: Globs of the only files taken in; null: every image file.
    include: list[str] | None
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
        if pattern is None:
            return None
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if compiled.groups != 1:
            raise ValueError(f"must have exactly one capture group (...), got {compiled.groups}")
        return pattern

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


SCHEMA = IngestionParams
