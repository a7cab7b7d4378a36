"""The manifest's schema: the one table that ingestion writes and every later stage reads.

One row per image; the columns are documented in the README ("The manifest").
"""

#: The splits, in order.
SPLITS = ("train", "val", "test")

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

#: The manifest as ingestion writes it: the required columns, then the duplicates it collapsed.
MANIFEST_COLUMNS = (*REQUIRED_COLUMNS, "duplicates")
