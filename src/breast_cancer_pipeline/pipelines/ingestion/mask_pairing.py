"""Which mask files belong to which image (``ingestion.mask_pattern``).

A mask lies beside its image: ``ingestion.mask_pattern`` is its path relative to the image's
folder, ``{stem}`` standing for the image's file name without its extension, ``*`` and ``?`` for
any text and any one character within a name. BUSI's
``{stem}_mask.png`` pairs ``benign/benign (1)_mask.png`` with ``benign/benign (1).png``; a
pattern with ``*`` (``{stem}_mask*.png``) pairs every match, e.g. a second lesion's
``benign (1)_mask_1.png`` too. The masks of one image are merged into one
(:func:`breast_cancer_pipeline.masks.merge_masks`) when it is converted.

Masks are not images: ``ingestion.exclude`` keeps them out of the inventory (by default
``*_mask*``). A file the pattern would pair that is indexed as an image is an error; a file
that looks like a mask (the pattern with any stem) but pairs with no image is an *orphan*,
which the validation gate names.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Collection, Iterable
from pathlib import PurePosixPath

import pandas as pd

from breast_cancer_pipeline.imaging import is_image_name

#: The inventory's column of each image's mask files, ``;``-joined (empty: none).
MASK_SOURCES = "mask_sources"
#: Separator of several mask files in :data:`MASK_SOURCES`.
SEPARATOR = ";"
#: Where ``{stem}`` goes in ``ingestion.mask_pattern``.
STEM = "{stem}"


def check_pattern(pattern: str) -> str:
    """``ingestion.mask_pattern``, checked: one ``{stem}``, a relative path, not only the stem.

    Raises:
        ValueError: The pattern does not say where a mask lies (the message gives examples).
    """
    path = PurePosixPath(pattern)
    if (
        pattern.count(STEM) != 1
        or path.is_absolute()
        or ".." in path.parts
        or pattern.replace(STEM, "") in ("", ".")
        or "\\" in pattern
    ):
        raise ValueError(
            "must be a path relative to the image's folder with {stem} (the image's name "
            "without extension) once, e.g. '{stem}_mask.png' (BUSI), '{stem}_mask*.png' (a "
            f"second lesion's mask too) or 'masks/{{stem}}.png'; got {pattern!r}"
        )
    return pattern


def _wildcards(text: str) -> str:
    """A glob's text as a regex on one path: ``*`` and ``?`` never cross a ``/``."""
    return "".join(
        "[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char) for char in text
    )


class MaskPattern:
    """``ingestion.mask_pattern`` applied to a folder listing.

    Args:
        pattern: The checked pattern (:func:`check_pattern`).
        files: Every file of the folder, relative to it.
    """

    def __init__(self, pattern: str, files: Collection[str]) -> None:
        self.pattern = check_pattern(pattern)
        before, after = pattern.split(STEM)
        self._before, self._after = before, after
        self._exact = "*" not in pattern and "?" not in pattern
        self._files = sorted(files)
        self._present = set(self._files)
        any_stem = re.compile(f"(?:^|/){_wildcards(before)}[^/]+{_wildcards(after)}$")
        self.candidates = frozenset(f for f in self._files if any_stem.search(f))

    def masks_of(self, image: str) -> list[str]:
        """The mask files of ``image`` (relative path), sorted; empty when none."""
        path = PurePosixPath(image)
        folder = "" if str(path.parent) == "." else f"{path.parent}/"
        stem = path.stem
        if self._exact:
            name = f"{folder}{self._before}{stem}{self._after}"
            return [name] if name in self._present else []
        literal = _literal_prefix(self._before)
        prefix = folder + (literal + stem if literal == self._before else literal)
        regex = re.compile(
            re.escape(folder) + _wildcards(self._before) + re.escape(stem) + _wildcards(self._after)
        )
        start = bisect.bisect_left(self._files, prefix)
        found = []
        for name in self._files[start:]:
            if not name.startswith(prefix):
                break
            if regex.fullmatch(name):
                found.append(name)
        return found


def _literal_prefix(text: str) -> str:
    """The part of a glob before its first wildcard."""
    cut = min((i for i in (text.find("*"), text.find("?")) if i >= 0), default=len(text))
    return text[:cut]


def pair_masks(
    inventory: pd.DataFrame, files: Collection[str], pattern: str, setting: str
) -> pd.DataFrame:
    """The inventory with :data:`MASK_SOURCES`: each image's mask files by the pattern.

    Args:
        inventory: One row per indexed file (``source_path`` relative to the folder).
        files: Every file of the folder.
        pattern: ``ingestion.mask_pattern``.
        setting: The folder's parameter, for messages (``ingestion.source_dir``).

    Returns:
        A copy with :data:`MASK_SOURCES` (``;``-joined paths, empty when none).

    Raises:
        ValueError: A file the pattern pairs as a mask is indexed as an image too.
    """
    matcher = MaskPattern(pattern, files)
    images = set(inventory["source_path"])
    pairs = [matcher.masks_of(rel) for rel in inventory["source_path"]]
    both = sorted({mask for masks in pairs for mask in masks} & images)
    if both:
        raise ValueError(
            f"{len(both)} file(s) of {setting} are paired as masks by ingestion.mask_pattern "
            f"{pattern!r} but ingested as images too (first: {both[0]!r}); leave masks out of "
            "the images with ingestion.exclude (default ['*_mask*', '*_Mask*'])"
        )
    result = inventory.copy()
    result[MASK_SOURCES] = [SEPARATOR.join(masks) for masks in pairs]
    return result


def orphan_masks(files: Collection[str], pattern: str) -> list[str]:
    """Files that look like masks by ``pattern`` (any stem) but belong to no image file.

    Every image file of the folder counts, also one that ``ingestion.exclude`` leaves out or
    that cannot be read: the masks of a class left out are not orphans.

    Args:
        files: Every file of the folder.
        pattern: ``ingestion.mask_pattern``.
    """
    matcher = MaskPattern(pattern, files)
    images = (f for f in files if is_image_name(PurePosixPath(f).name))
    claimed = {mask for f in images if f not in matcher.candidates for mask in matcher.masks_of(f)}
    return sorted(matcher.candidates - claimed)


def split_sources(value: str) -> list[str]:
    """The mask files of one :data:`MASK_SOURCES` cell."""
    return [part for part in str(value or "").split(SEPARATOR) if part]


#: Columns of the mask table (one row per mask file) that the validation gate checks.
MASK_TABLE_COLUMNS = [
    "mask",
    "image",
    "path",
    "mask_path",
    "label",
    "split",
    "width",
    "height",
    "image_width",
    "image_height",
    "n_values",
    "lesion_pixels",
    "error",
]
_NUMBERS = ("width", "height", "image_width", "image_height", "n_values", "lesion_pixels")


def mask_table(
    records: pd.DataFrame, manifest: pd.DataFrame, orphans: Iterable[str]
) -> pd.DataFrame:
    """One row per mask file: its image, its size, values and lesion, or why it has no image.

    Args:
        records: The conversion records (``source_path`` is the image's source; ``masks``
            the mask files' entries of :func:`.conversion.mask_record`).
        manifest: The manifest (its rows give each image's path, label and split).
        orphans: Mask files without an image (:func:`orphan_masks`).

    Returns:
        The table of :data:`MASK_TABLE_COLUMNS`: numbers are NaN where unknown (a mask that
        cannot be read, an orphan); text is empty.
    """
    by_source = {}
    if len(records) and "masks" in records:
        by_source = {row["source_path"]: row for row in records.to_dict("records") if row["ok"]}
    rows = []
    first_pages = manifest.drop_duplicates("source_path") if len(manifest) else manifest
    for image in first_pages.to_dict("records"):
        record = by_source.get(image["source_path"])
        if record is None or not isinstance(record.get("masks"), list | tuple):
            continue
        page = record["pages"][0]
        for entry in record["masks"]:
            rows.append(
                {
                    "mask": entry["source"],
                    "image": image["source_path"],
                    "path": image["path"],
                    "mask_path": image.get("mask_path", "") or "",
                    "label": image["label"],
                    "split": image["split"],
                    "image_width": page["width"],
                    "image_height": page["height"],
                    **{k: v for k, v in entry.items() if k != "source"},
                }
            )
    rows.extend({"mask": orphan, "error": ""} for orphan in orphans)
    table = pd.DataFrame(rows, columns=MASK_TABLE_COLUMNS)
    for column in MASK_TABLE_COLUMNS:
        if column in _NUMBERS:
            table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")
        else:
            table[column] = table[column].fillna("").astype(str)
    return table
