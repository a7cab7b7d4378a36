"""The manifest's schema: the one table that ingestion writes and every later stage reads.

One row per image; the columns are documented in the README ("The manifest").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: The splits, in order.
SPLITS = ("train", "val", "test")

#: The split of the images of ``ingestion.external_dir``: an external test site, never used
#: for training, model selection, thresholds or calibration.
EXTERNAL_SPLIT = "external"

#: Every split a manifest may hold, in report order.
MANIFEST_SPLITS = (*SPLITS, EXTERNAL_SPLIT)

#: Prefix of the ``path``, ``source_path`` and ``group`` of external images (so that they never
#: collide with the training source's).
EXTERNAL_PREFIX = "external/"

#: Columns every stage after ingestion relies on (the validation gate checks them).
REQUIRED_COLUMNS = (
    "path",
    "source_path",
    "label",
    "split",
    "group",
    "width",
    "height",
    "channels",
    "sha256",
    "mean",
    "std",
    "split_origin",
)

#: The converted lesion mask of an image (``ingestion.mask_pattern``,
#: ``ingestion.csv.mask_column``): a path like ``path``, empty when the image has none.
MASK_PATH = "mask_path"

#: The manifest as ingestion writes it: the required columns, the duplicates it collapsed, the
#: image's lesion mask.
MANIFEST_COLUMNS = (*REQUIRED_COLUMNS, "duplicates", MASK_PATH)

#: Manifest columns that hold numbers (the validation gate coerces them before checking).
NUMERIC_COLUMNS = ("width", "height", "channels", "mean", "std")

#: Columns that describe an image, in every manifest after the required ones: from the DICOM
#: header (:data:`breast_cancer_pipeline.columns.DICOM_TAGS`) unless ``ingestion.column_patterns``
#: or ``ingestion.csv.extra_columns`` set them. Text, ``""`` when unknown; ``patient_age`` is a
#: number of years, NaN when unknown. Columns a user names in those parameters follow them.
DESCRIPTIVE_COLUMNS = ("laterality", "view", "manufacturer", "patient_age", "study")

#: Descriptive columns that hold numbers (NaN when unknown); the others hold text.
NUMERIC_DESCRIPTIVE_COLUMNS = ("patient_age",)

#: Columns no parameter may name as a descriptive column: ingestion sets them itself
#: (``group`` excepted: ``ingestion.column_patterns`` may set the patient id).
RESERVED_COLUMNS = frozenset(MANIFEST_COLUMNS) - {"group"} | {"problem"}


def expected_split_shares(ratios: Sequence[float], val_from_train: float) -> dict[str, float]:
    """The share of groups each split should receive, from ``ingestion.split``.

    Args:
        ratios: ``ingestion.split.ratios``: ``[train, test]`` or ``[train, val, test]``,
            positive and summing to 1.
        val_from_train: ``ingestion.split.val_from_train``: with two ratios, the share of
            train that becomes the validation split (in ``(0, 1)``); unused with three.

    Returns:
        ``{"train": ..., "val": ..., "test": ...}`` (the keys of `SPLITS`, in order), summing
        to 1. ``[0.8, 0.2]`` with ``val_from_train=0.25`` gives train 0.6, val 0.2, test 0.2.

    Raises:
        ValueError: If ``ratios`` is not two or three positive numbers summing to 1 (the
            message names ``ingestion.split.ratios``), or, with two ratios, if
            ``val_from_train`` is not in ``(0, 1)`` (the message names
            ``ingestion.split.val_from_train``).
    """
    numbers = (
        isinstance(ratios, Sequence)
        and not isinstance(ratios, str | bytes)
        and all(isinstance(r, int | float) and not isinstance(r, bool) for r in ratios)
    )
    if (
        not numbers
        or len(ratios) not in (2, 3)
        or not all(r > 0 for r in ratios)
        or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6)
    ):
        raise ValueError(
            "ingestion.split.ratios must be two or three positive numbers that sum to 1, "
            f"[train, test] or [train, val, test], e.g. [0.7, 0.3] or [0.8, 0.1, 0.1]; "
            f"got {ratios!r}"
        )
    if len(ratios) == 3:
        shares = tuple(float(r) for r in ratios)
    else:
        if (
            not isinstance(val_from_train, int | float)
            or isinstance(val_from_train, bool)
            or not 0 < val_from_train < 1
        ):
            raise ValueError(
                "ingestion.split.val_from_train must be a number strictly between 0 and 1 "
                f"(the share of train that becomes val), got {val_from_train!r}"
            )
        train, test = float(ratios[0]), float(ratios[1])
        shares = (train * (1 - val_from_train), train * val_from_train, test)
    return dict(zip(SPLITS, shares, strict=True))
