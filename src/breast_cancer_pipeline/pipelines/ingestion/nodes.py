"""Ingestion: a folder of images in any common layout → PNGs and a manifest with splits.

The source folder arrives as ``{path relative to ingestion.source_dir: loader}``, where each
loader returns the file's bytes when called and (from ``ImageFolderDataset``) carries the file's
``size`` and ``mtime_ns``. The nodes are pure: the conversion node returns a *plan* (one small,
picklable task per image) and the ``intermediate_images`` dataset runs it — in parallel,
skipping sources that did not change since they were converted, staging each PNG atomically as
soon as it is ready; once the manifest is written, :func:`publish_conversion` tells the store to
swap the new PNGs in (see ``breast_cancer_pipeline.datasets.image_store``).

Steps: :func:`index_source` (labels, groups, provider splits) → :func:`plan_conversion` →
:func:`collect_conversion` (statistics, bad files) → :func:`collapse_duplicates` →
:func:`split_manifest` → :func:`publish_conversion`; :func:`collect_masks` lists the lesion
masks for the gate. The work is done by the modules beside
this one: :mod:`.layouts` and :mod:`.csv_tables` (what the images are), :mod:`.conversion`
(the plan and its records), :mod:`.mask_pairing`, :mod:`.duplicates` and :mod:`.splitting`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping

import pandas as pd

from breast_cancer_pipeline.file_records import StoreCommit, StoredFiles, StorePlan
from breast_cancer_pipeline.manifest import EXTERNAL_PREFIX, EXTERNAL_SPLIT, MASK_PATH
from breast_cancer_pipeline.param_schema import validate_block

from . import conversion, descriptors, duplicates, layouts, mask_pairing, splitting
from .conversion import BadFilesError
from .csv_tables import index_csv
from .mask_pairing import MASK_SOURCES, SEPARATOR, split_sources

__all__ = [
    "BadFilesError",
    "collapse_duplicates",
    "collect_conversion",
    "collect_masks",
    "index_source",
    "plan_conversion",
    "publish_conversion",
    "split_manifest",
]

logger = logging.getLogger(__name__)


def index_source(
    raw_files: Mapping[str, Callable[[], bytes]],
    params: dict,
    external_files: Mapping[str, Callable[[], bytes]] | None = None,
) -> pd.DataFrame:
    """List the images of the source with their label, group and provider split.

    Layouts (``ingestion.layout``): ``class_folders`` (label = parent folder, or
    ``label_pattern``), ``presplit`` (``train/``, ``val|valid|validation/``, ``test/``, each
    holding class folders), ``csv`` (a CSV/parquet table naming each image, see
    ``ingestion.csv``) or ``auto``: ``csv`` when ``ingestion.csv.path`` is set, else
    ``presplit`` when the top folders are split names, else ``class_folders``.

    The external test site (``ingestion.external_dir``) is indexed the same way, on its own
    (its layout is detected separately); its rows get split ``external`` and ``source_path``
    and ``group`` under ``external/``, so they never mix with the training source's.

    Args:
        raw_files: ``{path relative to ingestion.source_dir: loader}``.
        params: The ``ingestion`` parameters.
        external_files: ``{path relative to ingestion.external_dir: loader}``; empty or
            ``None`` when there is no external site.

    Returns:
        One row per image: ``source_path``, ``label``, ``group``, ``split`` (the provider's
        split, ``external`` for the external site, else empty) and ``problem`` (why the row
        cannot be ingested, e.g. a file the CSV lists but the folder lacks, or a link that
        leads outside the folder; empty when fine); then the columns of
        ``ingestion.csv.extra_columns`` and of the path patterns of
        ``ingestion.column_patterns`` (a ``group`` pattern sets ``group``); with
        ``ingestion.mask_pattern`` or ``ingestion.csv.mask_column``, ``mask_sources``: the
        image's mask files, ``;``-joined (empty: none).

    Raises:
        ParameterError: A parameter is invalid (the message names it).
        ValueError: The CSV does not fit the parameters, no image was found, or fewer than
            two classes were (the message says where and which parameters decide it).
    """
    validate_block("ingestion", params)
    inventory = _index_folder(raw_files, params, "ingestion.source_dir")
    if external_files:
        external = _index_folder(external_files, params, "ingestion.external_dir")
        inventory = pd.concat([inventory, external_rows(external)], ignore_index=True)
        if MASK_SOURCES in inventory:
            inventory[MASK_SOURCES] = inventory[MASK_SOURCES].fillna("")
    return inventory


def _index_folder(
    raw_files: Mapping[str, Callable[[], bytes]], params: dict, setting: str
) -> pd.DataFrame:
    """The inventory of one source folder (``setting`` names it in messages)."""
    layout = layouts.detect_layout(raw_files, params)
    if layout == "csv":
        inventory = index_csv(raw_files, params)
    else:
        inventory = layouts.index_folders(raw_files, params, presplit=layout == "presplit")
    inventory = descriptors.add_path_columns(inventory, params, setting)
    if params["mask_pattern"]:
        inventory = _with_pattern_masks(inventory, raw_files, params["mask_pattern"], setting)
    refused = layouts.refused_link_rows(raw_files, params, set(inventory["source_path"]))
    if len(refused):
        inventory = pd.concat([inventory, refused], ignore_index=True)
        if MASK_SOURCES in inventory:
            inventory[MASK_SOURCES] = inventory[MASK_SOURCES].fillna("")
    if inventory.empty:
        raise ValueError(
            f"no images found in {setting} ({len(raw_files)} files seen, layout "
            f"{layout!r}). Images are files with an image extension in class folders (or the "
            f"rows of ingestion.csv.path); check {setting}, ingestion.layout, "
            "ingestion.include and ingestion.exclude"
        )
    usable = inventory[inventory["problem"] == ""]
    counts = usable["label"].value_counts().sort_index()
    logger.info(
        "Found %d images (%s layout) in %d classes (%s), %d groups; %d file(s) with a problem (%s)",
        len(usable),
        layout,
        len(counts),
        ", ".join(f"{k}: {v}" for k, v in counts.items()),
        usable["group"].nunique(),
        len(inventory) - len(usable),
        setting,
    )
    splitting.require_classes(usable["label"], f"the images found in {setting}")
    return inventory


def _with_pattern_masks(
    inventory: pd.DataFrame, raw_files: Mapping[str, object], pattern: str, setting: str
) -> pd.DataFrame:
    """The inventory with each image's masks by ``ingestion.mask_pattern`` (and the table's)."""
    from_table = inventory.get(MASK_SOURCES)
    paired = mask_pairing.pair_masks(inventory, list(raw_files), pattern, setting)
    if from_table is not None:
        paired[MASK_SOURCES] = [
            SEPARATOR.join(dict.fromkeys(split_sources(a) + split_sources(b)))
            for a, b in zip(from_table, paired[MASK_SOURCES], strict=True)
        ]
    n_masks = sum(len(split_sources(v)) for v in paired[MASK_SOURCES])
    n_images = int((paired[MASK_SOURCES] != "").sum())
    logger.info("Paired %d mask file(s) with %d image(s) (%s)", n_masks, n_images, setting)
    return paired


def external_rows(inventory: pd.DataFrame) -> pd.DataFrame:
    """The external site's inventory as rows of the combined one.

    Their split is ``external`` (a provider split of the external folder is not kept); their
    ``source_path`` and ``group`` move under ``external/``.
    """
    rows = inventory.copy()
    rows["source_path"] = EXTERNAL_PREFIX + rows["source_path"].astype(str)
    rows["group"] = EXTERNAL_PREFIX + rows["group"].astype(str)
    rows["split"] = EXTERNAL_SPLIT
    if MASK_SOURCES in rows:
        rows[MASK_SOURCES] = [
            SEPARATOR.join(EXTERNAL_PREFIX + mask for mask in split_sources(cell))
            for cell in rows[MASK_SOURCES]
        ]
    return rows


def combined_sources(
    raw_files: Mapping[str, Callable[[], bytes]],
    external_files: Mapping[str, Callable[[], bytes]] | None,
) -> dict[str, Callable[[], bytes]]:
    """``{source_path: loader}`` over both folders, external paths under ``external/``."""
    sources = dict(raw_files)
    for rel, loader in (external_files or {}).items():
        sources[EXTERNAL_PREFIX + rel] = loader
    return sources


def plan_conversion(
    raw_files: Mapping[str, Callable[[], bytes]],
    inventory: pd.DataFrame,
    params: dict,
    external_files: Mapping[str, Callable[[], bytes]] | None = None,
    cluster: dict | None = None,
) -> StorePlan:
    """Plan the PNG conversion of every indexed image; the image store carries it out.

    Each task decodes one source with :func:`breast_cancer_pipeline.imaging.decode_pages` (the
    decoder serving uses) and encodes it as lossless PNG (one per page under
    ``multipage: all``). Its key is the source path, size and modification time plus the
    conversion settings and the decoder's code, so the store skips a source that is unchanged
    and was converted with the same settings and decoder.

    Args:
        raw_files: ``{relative path: loader}`` of the source folder.
        inventory: Output of :func:`index_source`.
        params: The ``ingestion`` parameters.
        external_files: ``{relative path: loader}`` of ``ingestion.external_dir``, if any
            (converted under ``external/``).
        cluster: The ``cluster`` parameters: with an ``address``, the tasks run on that
            Dask cluster; the PNGs and records are the same.

    Returns:
        The plan: ``{PNG path: task}``, the worker processes, where they run and the progress
        interval.

    Raises:
        ValueError: Two sources would be converted to the same PNG path.
    """
    plan = conversion.build_plan(combined_sources(raw_files, external_files), inventory, params)
    return dataclasses.replace(plan, cluster=cluster)


def collect_conversion(
    converted: StoredFiles, inventory: pd.DataFrame, params: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join the conversion records to the inventory; stop on or report the bad files.

    Every source has been tried before this node runs, so one message lists every bad file.

    Args:
        converted: The ``intermediate_images`` store, with its conversion records.
        inventory: Output of :func:`index_source`.
        params: The ``ingestion`` parameters.

    Returns:
        ``(image_info, rejected)``: one row per ingested image (per page under
        ``multipage: all``) with ``path`` (the PNG), ``width``, ``height``, ``channels``,
        ``sha256``, ``mean`` and ``std``, then the descriptive columns (``laterality``,
        ``view``, ``manufacturer``, ``patient_age``, ``study`` from the DICOM header unless a
        parameter sets them, and the columns of ``ingestion.column_patterns`` and
        ``ingestion.csv.extra_columns``; see :mod:`.descriptors`); and the bad files with
        ``path`` (the source), ``reason`` and ``detail`` (never any of the file's content).

    Raises:
        BadFilesError: Bad files were found and ``on_bad_file`` is ``fail``, or none of the
            images could be ingested.
        ValueError: The store has no record of a planned conversion (it was not run).
    """
    good, bad, first_only = conversion.collect_records(converted, inventory)
    rejected = conversion.report_bad_files(bad, len(inventory), params)
    conversion.warn_first_pages(first_only)
    if not good:
        raise BadFilesError(f"none of the {len(inventory)} images could be ingested")
    info = descriptors.add_header_columns(pd.DataFrame(good).drop(columns=["problem"]), params)
    return info.astype({"width": int, "height": int, "channels": int}), rejected


def collapse_duplicates(image_info: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep one row per identical image and label; report images that carry two labels.

    Identical means the same ``sha256`` of the decoded pixels (so a PNG and a JPEG-free
    re-export of it, or one file copied into two folders, match). Copies under one label
    collapse to the first by ``source_path``; the kept row lists the others in ``duplicates``.
    An image under two labels (a *conflict*) keeps all its rows, so the validation gate's
    ``sha256_in_one_label`` check sees it and stops the run.

    Args:
        image_info: Output of :func:`collect_conversion`.

    Returns:
        ``(image_info, report)``: one row per distinct (image, label) with a ``duplicates``
        column (``;``-separated source paths, empty when none); and one report row per
        dropped copy (``kind`` ``duplicate``) and per row of a conflict (``conflict``).
    """
    return duplicates.collapse(image_info)


def split_manifest(image_info: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Assign every image to train/val/test, grouped by patient and stratified by label.

    A provider's split (pre-split folders or ``ingestion.csv.split_column``) is kept.
    Otherwise each group goes wholly to one split, so no patient spans two (the pages of one
    file share its group); groups are drawn per label so every class is spread by the
    configured ratios. With two ratios ``[train, test]`` the validation split is taken from
    train (``split.val_from_train`` of its groups). A class that a split lacks is named in a
    warning (the validation gate stops such a dataset).

    Args:
        image_info: Output of :func:`collapse_duplicates`.
        params: The ``ingestion`` parameters.

    Returns:
        The manifest: one row per image, sorted by ``path`` (columns in README.md).

    Raises:
        ValueError: Fewer than two classes remain (e.g. every image of a class was a bad file).
    """
    return splitting.assign_splits(image_info, params["split"])


def publish_conversion(manifest: pd.DataFrame) -> StoreCommit:
    """Tell the image store that the manifest is written: swap the new PNGs in.

    Runs after the manifest is saved, so a run killed before this point leaves the previous
    manifest with all its PNGs, and one killed after it leaves the new manifest with its PNGs
    (staged ones are read from the staging area until swapped in).

    Args:
        manifest: Output of :func:`split_manifest` (as saved).

    Returns:
        The commit for ``published_images`` (the same store as ``intermediate_images``).
    """
    masks = manifest[MASK_PATH] if MASK_PATH in manifest else pd.Series([], dtype=str)
    return StoreCommit(referenced=(*manifest["path"], *masks[masks != ""]))


def collect_masks(
    converted: StoredFiles,
    manifest: pd.DataFrame,
    raw_files: Mapping[str, Callable[[], bytes]],
    params: dict,
    external_files: Mapping[str, Callable[[], bytes]] | None = None,
) -> pd.DataFrame:
    """The mask table the validation gate checks: one row per mask file.

    Each mask file paired with an image of the manifest (``ingestion.mask_pattern`` or
    ``ingestion.csv.mask_column``) has its size beside its image's, its number of distinct
    values, its lesion pixels and the read error, if any; each file that looks like a mask by
    ``ingestion.mask_pattern`` but pairs with no image file has a row without image.

    Args:
        converted: The ``intermediate_images`` store, with its conversion records.
        manifest: Output of :func:`split_manifest`.
        raw_files: ``{relative path: loader}`` of the source folder.
        params: The ``ingestion`` parameters.
        external_files: ``{relative path: loader}`` of ``ingestion.external_dir``, if any.

    Returns:
        The table of :data:`.mask_pairing.MASK_TABLE_COLUMNS` (no row without masks).
    """
    if not (params["mask_pattern"] or params["csv"]["mask_column"]):
        return mask_pairing.mask_table(pd.DataFrame(), manifest.iloc[:0], [])
    orphans: list[str] = []
    if params["mask_pattern"]:
        files = list(combined_sources(raw_files, external_files))
        orphans = mask_pairing.orphan_masks(files, params["mask_pattern"])
        if orphans:
            logger.warning(
                "%d file(s) look like masks (ingestion.mask_pattern %r) but pair with no "
                "image, e.g. %s; the validation gate names them (mask_has_image)",
                len(orphans),
                params["mask_pattern"],
                ", ".join(orphans[:3]),
            )
    return mask_pairing.mask_table(converted.records, manifest, orphans)
