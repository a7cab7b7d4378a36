"""Train / val / test assignment: grouped by patient, stratified by label, seeded.

The shares come from :func:`breast_cancer_pipeline.manifest.expected_split_shares`, the one
rule for ``ingestion.split`` that the validation gate also uses.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from breast_cancer_pipeline.manifest import (
    EXTERNAL_SPLIT,
    MANIFEST_COLUMNS,
    MANIFEST_SPLITS,
    MASK_PATH,
    SPLITS,
    expected_split_shares,
)

logger = logging.getLogger(__name__)


def assign_splits(image_info: pd.DataFrame, split_params: dict) -> pd.DataFrame:
    """The manifest: every image in a split, the provider's when it gave one for every image.

    Its columns: :data:`~breast_cancer_pipeline.manifest.MANIFEST_COLUMNS`, then the other
    columns of ``image_info`` (the descriptive ones), in their order.

    Rows of the external site (split ``external``) keep it, with ``split_origin``
    ``external``; the others are split as if they were alone.

    Raises:
        ValueError: Fewer than two classes remain.
    """
    manifest = image_info.copy()
    for column in ("duplicates", MASK_PATH):
        if column not in manifest:
            manifest[column] = ""
    external = manifest["split"] == EXTERNAL_SPLIT
    internal = manifest[~external].copy()
    require_classes(internal["label"], "the ingested images")
    if (internal["split"] != "").all():
        internal["split_origin"] = "provider"
    else:
        internal["split"] = internal["group"].map(_seeded_assignment(internal, split_params))
        internal["split_origin"] = "seeded"
    if external.any():
        internal = pd.concat([internal, manifest[external].assign(split_origin=EXTERNAL_SPLIT)])
    manifest = internal
    manifest = manifest.sort_values("path").reset_index(drop=True)
    counts = manifest.groupby(["split", "label"]).size().unstack(fill_value=0)
    counts = counts.reindex([s for s in MANIFEST_SPLITS if s in counts.index])
    logger.info("Split (images per class):\n%s", counts.to_string())
    _warn_empty_splits(counts.drop(index=EXTERNAL_SPLIT, errors="ignore"))
    descriptive = [column for column in image_info.columns if column not in MANIFEST_COLUMNS]
    return manifest[[*MANIFEST_COLUMNS, *descriptive]]


def require_classes(labels: pd.Series, where: str) -> None:
    """Stop when fewer than two classes (non-empty labels) are found, naming those found.

    Raises:
        ValueError: Zero or one class.
    """
    counts = labels[labels != ""].value_counts().sort_index()
    if len(counts) >= 2:
        return
    found = ", ".join(f"{label!r} ({n} images)" for label, n in counts.items()) or "none"
    raise ValueError(
        f"{where} hold {len(counts)} class(es): {found}; a classifier needs at least two. "
        "Check that every class has its own folder (or ingestion.label_pattern / "
        "ingestion.csv.label_column gives it), that ingestion.label_map does not merge them "
        "and that ingestion.include / ingestion.exclude keep them; with "
        "ingestion.on_bad_file: skip, see data/02_intermediate/rejected_files.csv"
    )


def allocate(n: int, ratios: tuple[float, ...]) -> list[int]:
    """Split ``n`` items by ``ratios``, giving every split at least one item when n ≥ 3."""
    counts = [int(np.floor(n * r)) for r in ratios]
    order = np.argsort([-(n * r - c) for r, c in zip(ratios, counts, strict=True)])
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    if n >= len(ratios):
        for i in range(len(counts)):
            if counts[i] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[i] = 1
    return counts


def _seeded_assignment(manifest: pd.DataFrame, split_params: dict) -> dict[str, str]:
    """``{group: split}``: each label's groups shuffled, then cut by the configured shares."""
    shares = expected_split_shares(split_params["ratios"], split_params["val_from_train"])
    ratios = tuple(shares[split] for split in SPLITS)
    rng = np.random.default_rng(split_params["seed"])
    group_label = manifest.groupby("group")["label"].agg(lambda s: s.mode().iloc[0])
    assignment: dict[str, str] = {}
    for label in sorted(group_label.unique()):
        groups = np.array(sorted(group_label.index[group_label == label]))
        rng.shuffle(groups)
        start = 0
        for split, count in zip(SPLITS, allocate(len(groups), ratios), strict=True):
            assignment.update(dict.fromkeys(groups[start : start + count], split))
            start += count
    return assignment


def _warn_empty_splits(counts: pd.DataFrame) -> None:
    """Name every class that a split lacks (the validation gate's min_images_per_class stops it)."""
    table = counts.reindex(index=list(SPLITS), fill_value=0)
    empty = [
        f"{label!r} in {split}"
        for split in SPLITS
        for label in table.columns
        if not table.loc[split, label]
    ]
    if empty:
        logger.warning(
            "%d class/split pair(s) have no image: %s. Training, model selection and the test "
            "report need every class in train, val and test: add images (or patients), change "
            "ingestion.split.ratios, or fix the provider's split; the validation gate "
            "(min_images_per_class) stops the run before training",
            len(empty),
            ", ".join(empty),
        )
