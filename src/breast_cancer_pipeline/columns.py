r"""What an image's path or DICOM header says about it: the manifest's descriptive columns.

Ingestion writes these columns into the manifest; the batch command derives the same columns
from the names of the files it scores, with the same functions, so that both read a layout
alike. Two sources:

- :func:`path_columns`: ``ingestion.column_patterns`` entries that are a regex with one group,
  searched in the path relative to the source folder, e.g.
  ``{magnification: '-(\d+)-\d+\.png$'}`` (BreakHis) or ``{laterality: '_([LR])_'}``;
- :func:`dicom_columns`: the DICOM tags of :data:`DICOM_TAGS` (``laterality``, ``view``,
  ``manufacturer``, ``patient_age``, ``study``), and the ``ingestion.column_patterns`` entries
  that read a tag, e.g. ``{view: {tag: PatientID, pattern: '_(CC|MLO)$'}}``.

A pattern that does not match gives an empty value. Values are cleaned by :func:`clean_value`
(``laterality`` ``LEFT``/``RIGHT`` become ``L``/``R``, ``patient_age`` ``057Y`` becomes 57.0).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

#: Descriptive column -> the DICOM keywords it is read from, the first present wins.
DICOM_TAGS: dict[str, tuple[str, ...]] = {
    "laterality": ("ImageLaterality", "Laterality"),
    "view": ("ViewPosition",),
    "manufacturer": ("Manufacturer",),
    "patient_age": ("PatientAge",),
    "study": ("StudyInstanceUID",),
}

#: One ``ingestion.column_patterns`` entry: a regex on the path, or ``{tag, pattern}``.
PatternSpec = str | Mapping[str, str]

_DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ""})
#: Days per unit of a DICOM Age String (``nnnD``, ``nnnW``, ``nnnM``, ``nnnY``).
_AGE_UNITS = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([DWMY]?)\s*$", re.IGNORECASE)
_LATERALITY_WORDS = {"LEFT": "L", "RIGHT": "R"}


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a regex that must hold exactly one capture group.

    Raises:
        ValueError: The regex does not compile, or has zero or several groups.
    """
    try:
        compiled = re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    if compiled.groups != 1:
        raise ValueError(f"must have exactly one capture group (...), got {compiled.groups}")
    return compiled


def check_tag(keyword: str) -> str:
    """A DICOM keyword (``PatientID``, ``SeriesDescription``, ...), checked against pydicom's.

    Raises:
        ValueError: Not a keyword of the DICOM dictionary.
    """
    from pydicom.datadict import tag_for_keyword  # noqa: PLC0415 - pydicom only when asked

    if not isinstance(keyword, str) or tag_for_keyword(keyword) is None:
        raise ValueError(
            f"{keyword!r} is not a DICOM keyword; use the keyword, e.g. PatientID, "
            "SeriesDescription or ViewPosition"
        )
    return keyword


def split_spec(spec: PatternSpec) -> tuple[str | None, str]:
    """``(tag, regex)`` of one pattern entry; ``tag`` is ``None`` for a path pattern."""
    if isinstance(spec, str):
        return None, spec
    return str(spec["tag"]), str(spec["pattern"])


def path_columns(rel_path: str, patterns: Mapping[str, PatternSpec]) -> dict[str, Any]:
    r"""The columns the path patterns give one file.

    Args:
        rel_path: The file's path relative to the folder (``/``-separated).
        patterns: ``ingestion.column_patterns``; entries that read a DICOM tag are left out.

    Returns:
        ``{column: cleaned value}`` for every path pattern, ``""`` (NaN for ``patient_age``)
        where the pattern does not match. E.g. ``SOB_B_A-14-22549AB-40-001.png`` with
        ``{magnification: '-(\d+)-\d+\.png$'}`` gives ``{"magnification": "40"}``.
    """
    values = {}
    for column, spec in patterns.items():
        tag, regex = split_spec(spec)
        if tag is None:
            values[column] = clean_value(column, _search(regex, rel_path))
    return values


def dicom_columns(dataset: Any, patterns: Mapping[str, PatternSpec]) -> dict[str, Any]:
    """The descriptive columns a DICOM header gives, tag patterns included.

    Args:
        dataset: A pydicom ``Dataset`` (the header suffices).
        patterns: ``ingestion.column_patterns``; entries on the path are left out.

    Returns:
        ``{column: cleaned value}``: every column of :data:`DICOM_TAGS`, then each tag
        pattern's column (a tag pattern for ``view`` replaces ``ViewPosition``).
    """
    return tag_columns(dicom_tags(dataset, tag_keywords(patterns)), patterns)


def tag_keywords(patterns: Mapping[str, PatternSpec]) -> tuple[str, ...]:
    """Every DICOM keyword :func:`tag_columns` reads: :data:`DICOM_TAGS` and the patterns'."""
    keywords = {keyword for names in DICOM_TAGS.values() for keyword in names}
    keywords |= {tag for tag, _ in map(split_spec, patterns.values()) if tag is not None}
    return tuple(sorted(keywords))


def dicom_tags(dataset: Any, keywords: Iterable[str]) -> dict[str, str]:
    r"""``{keyword: text}`` of the tags the header holds (multi-values ``\``-joined)."""
    tags = {}
    for keyword in keywords:
        value = dataset.get(keyword)
        if value is None or value == "":
            continue
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            value = "\\".join(str(v) for v in value)
        tags[keyword] = str(value).strip()
    return tags


def tag_columns(tags: Mapping[str, str], patterns: Mapping[str, PatternSpec]) -> dict[str, Any]:
    """The columns of :func:`dicom_columns`, from tag values read earlier (:func:`dicom_tags`)."""
    values = {
        column: clean_value(column, next((tags[k] for k in keywords if tags.get(k)), ""))
        for column, keywords in DICOM_TAGS.items()
    }
    for column, spec in patterns.items():
        tag, regex = split_spec(spec)
        if tag is not None:
            values[column] = clean_value(column, _search(regex, tags.get(tag, "")))
    return values


def clean_value(column: str, value: Any) -> Any:
    """One column's value as the manifest holds it.

    Text is stripped; ``laterality`` and ``view`` are upper-cased and ``LEFT``/``RIGHT``
    become ``L``/``R``; ``patient_age`` becomes years (:func:`age_in_years`).
    """
    if column == "patient_age":
        return age_in_years(value)
    text = "" if _missing(value) else str(value).strip()
    if column in ("laterality", "view"):
        text = text.upper()
    if column == "laterality":
        text = _LATERALITY_WORDS.get(text, text)
    return text


def age_in_years(value: Any) -> float:
    """A DICOM Age String (``057Y``, ``018M``, ``010W``, ``003D``) or a number, in years.

    Returns:
        The age in years; NaN for an empty or unreadable value.
    """
    if _missing(value):
        return math.nan
    if isinstance(value, int | float):
        return float(value)
    match = _AGE.match(str(value))
    if not match:
        return math.nan
    number, unit = float(match.group(1)), match.group(2).upper()
    return number if unit in ("", "Y") else number * _AGE_UNITS[unit] / _AGE_UNITS["Y"]


def read_dicom_header(data: bytes, name: str) -> Any | None:
    """The elements before the pixel data of a DICOM file, ``None`` for any other file.

    A file is DICOM as :mod:`breast_cancer_pipeline.imaging` decides: the ``DICM`` marker,
    or a ``.dcm``/``.dicom`` name (or none) on bytes Pillow does not recognise. Call it on a
    file that decoded (the decoder has bounded its cost).

    Args:
        data: The file's bytes.
        name: Its name, for the extension.

    Returns:
        A pydicom ``Dataset`` without pixel data, or ``None`` (not DICOM, or unreadable).
    """
    import pydicom  # noqa: PLC0415 - pydicom only for DICOM files

    marked = data[128:132] == b"DICM"
    if not marked and (
        PurePosixPath(name).suffix.lower() not in _DICOM_SUFFIXES or _pillow_reads(data)
    ):
        return None
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=not marked)
    except Exception:  # noqa: BLE001 - untrusted bytes: no header is no columns
        return None


def _pillow_reads(data: bytes) -> bool:
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(io.BytesIO(data)):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def _search(regex: str, text: str) -> str:
    match = re.search(regex, text)
    return "" if match is None or match.group(1) is None else match.group(1)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
