"""The gate's checks of lesion masks: each mask file fits its image, and lesions have one.

They run on two tables derived from ingestion's mask table (one row per mask file) and the
manifest: ``masks`` (key: the mask file, so a failure names it) and ``lesion_images`` (key:
the image's path). Every mask check has the one severity ``validation.masks.severity``; the
lesion classes are ``validation.masks.lesion_classes`` (null: every class but ``normal``).
The checks are skipped when the dataset has no mask (neither ``ingestion.mask_pattern`` nor
``ingestion.csv.mask_column``); ``lesion_image_has_mask`` runs only when tiles take their
labels from masks (``augmentation.tiles.labels: mask``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from breast_cancer_pipeline.manifest import MASK_PATH

if TYPE_CHECKING:
    from .expectations import CheckSpec, GateSettings, Table

#: The class of images without a lesion: not a lesion class unless
#: ``validation.masks.lesion_classes`` says so.
NORMAL_CLASS = "normal"


def lesion_classes(settings: GateSettings, labels: Iterable[str]) -> list[str]:
    """The lesion classes: ``validation.masks.lesion_classes``, else every label but normal."""
    chosen = settings.params.masks.lesion_classes
    if chosen is not None:
        return list(chosen)
    return sorted({str(label) for label in labels if str(label) != NORMAL_CLASS})


def mask_tables(
    manifest: pd.DataFrame, masks: pd.DataFrame | None, settings: GateSettings
) -> list[Table]:
    """The ``masks`` and ``lesion_images`` tables (empty without masks).

    ``masks``: one row per mask file with ``readable``, ``has_image``, ``size_matches``
    (null when unreadable or without image), ``n_values`` and ``lesion_pixels`` (null unless
    its image is of a lesion class). ``lesion_images``: one row per image of a lesion class
    with ``has_mask``.
    """
    from .expectations import Table  # noqa: PLC0415 - expectations imports this module

    masks = (masks if masks is not None else pd.DataFrame()).reindex(columns=_MASK_COLUMNS)
    text = masks[["mask", "image", "label", "error"]].fillna("").astype(str)
    labels = manifest["label"].dropna().astype(str) if "label" in manifest else []
    lesions = lesion_classes(settings, labels)
    readable, has_image = text["error"] == "", text["image"] != ""
    known = readable & has_image
    same = (masks["width"] == masks["image_width"]) & (masks["height"] == masks["image_height"])
    table = pd.DataFrame(
        {
            "mask": text["mask"],
            "readable": readable,
            "has_image": has_image,
            "size_matches": same.astype(object).where(known, None),
            "n_values": pd.to_numeric(masks["n_values"]).where(known),
            "lesion_pixels": pd.to_numeric(masks["lesion_pixels"]).where(
                known & text["label"].isin(lesions)
            ),
        }
    ).reset_index(drop=True)
    images = manifest.reindex(columns=["path", "label", MASK_PATH])
    images = images[images["label"].isin(lesions)]
    lesion_images = pd.DataFrame(
        {"path": images["path"], "has_mask": images[MASK_PATH].fillna("").astype(str) != ""}
    ).reset_index(drop=True)
    return [Table("masks", table, "mask"), Table("lesion_images", lesion_images, "path")]


#: The columns of ingestion's mask table the checks read.
_MASK_COLUMNS = [
    "mask",
    "image",
    "label",
    "error",
    "width",
    "height",
    "image_width",
    "image_height",
    "n_values",
    "lesion_pixels",
]


def _no_masks(settings: GateSettings, _: pd.DataFrame) -> str | None:
    if settings.has_masks:
        return None
    return "no masks (ingestion.mask_pattern and ingestion.csv.mask_column are null)"


def _not_mask_labels(settings: GateSettings, images: pd.DataFrame) -> str | None:
    if not settings.mask_labels:
        return "tiles do not take their labels from masks (augmentation.tiles.labels)"
    return None


def _rule(kind: str, column: str, words: str, **kwargs: Any) -> list[tuple[str, dict, str]]:
    return [(kind, {"column": column, **kwargs}, words)]


def _is_true(column: str, words: str) -> Callable[[GateSettings, pd.DataFrame], list]:
    return lambda s, m: _rule("ExpectColumnValuesToBeInSet", column, words, value_set=[True])


def mask_specs(spec: type[CheckSpec]) -> dict[str, CheckSpec]:
    """The mask checks, name -> spec (``spec`` is :class:`~.expectations.CheckSpec`)."""
    return {
        "mask_readable": spec(
            "masks",
            "Every mask file can be decoded. Fix: re-export it or remove it.",
            _is_true("readable", "each mask file decodes"),
            skip=_no_masks,
        ),
        "mask_has_image": spec(
            "masks",
            "Every file that `ingestion.mask_pattern` takes for a mask belongs to an ingested "
            "image. Fix: restore or rename its image, or remove the mask.",
            _is_true("has_image", "each mask file has its image"),
            skip=_no_masks,
        ),
        "mask_size_matches": spec(
            "masks",
            "Every mask has its image's width and height. Fix: re-export the mask at the "
            "image's size, or pair the right files.",
            _is_true("size_matches", "mask width x height = its image's"),
            skip=_no_masks,
        ),
        "mask_binary": spec(
            "masks",
            "Every mask is binary: at most two distinct values (a smooth or antialiased mask "
            "is not). Fix: threshold it (0/255).",
            lambda s, m: _rule(
                "ExpectColumnValuesToBeBetween", "n_values", "≤ 2 distinct values", max_value=2
            ),
            skip=_no_masks,
        ),
        "mask_not_empty": spec(
            "masks",
            "The masks of images of a lesion class (`validation.masks.lesion_classes`) mark "
            "at least one pixel. Fix: draw the lesion, or set validation.masks.severity: "
            "warning where a lesion does not show (e.g. in one of two views).",
            lambda s, m: _rule(
                "ExpectColumnValuesToBeBetween", "lesion_pixels", "≥ 1 lesion pixel", min_value=1
            ),
            skip=_no_masks,
        ),
        "lesion_image_has_mask": spec(
            "lesion_images",
            "With tiles labelled by masks (`augmentation.tiles.labels: mask`), every image "
            "of a lesion class has a mask. Fix: add its mask, or exclude the image.",
            _is_true("has_mask", "each lesion image has a mask"),
            skip=_not_mask_labels,
        ),
    }
