"""Named tables as CSV files in a folder, one per name (``predictions_<level>.csv``)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from breast_cancer_pipeline.datasets._atomic import atomic_path

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class NamedTablesDataset(AbstractDataset[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]):
    """Saves a ``dict[str, DataFrame]`` as one CSV file per name in a folder.

    Each file is written atomically; a file of the pattern left by an earlier save whose name
    is not in the new dict is removed, so the folder holds the last save's tables only (and
    nothing else of the folder is touched). Loading reads every cell as text, as written.
    """

    def __init__(
        self, path: str, pattern: str = "{name}.csv", metadata: dict[str, Any] | None = None
    ) -> None:
        """Create the dataset.

        Args:
            path: Folder of the files (it may hold other files).
            pattern: The file name of a table, with ``{name}`` for its name
                (``predictions_{name}.csv``). Not ``filename``: Kedro makes a catalog key of
                that name an absolute path in the project.
            metadata: Free-form metadata, ignored by the dataset.

        Raises:
            DatasetError: ``pattern`` has no ``{name}``.
        """
        if pattern.count("{name}") != 1:
            raise DatasetError(f"pattern {pattern!r} must hold '{{name}}' once")
        self._path = Path(PurePosixPath(path))
        self._prefix, self._suffix = pattern.split("{name}")
        self.metadata = metadata

    def _files(self) -> dict[str, Path]:
        """The tables in the folder: ``{name: file}``."""
        if not self._path.is_dir():
            return {}
        found = {}
        for file in sorted(self._path.glob(f"{self._prefix}*{self._suffix}")):
            name = file.name[len(self._prefix) : len(file.name) - len(self._suffix)]
            if _NAME.fullmatch(name):
                found[name] = file
        return found

    def load(self) -> dict[str, pd.DataFrame]:
        """Every table of the folder, keyed by name, each cell as text (empty as NaN)."""
        return {name: pd.read_csv(file, dtype=str) for name, file in self._files().items()}

    def save(self, data: dict[str, pd.DataFrame]) -> None:
        """Write each table to its file atomically; remove the earlier tables not in ``data``.

        Raises:
            DatasetError: A name is not a plain file-name part (letters, digits, ``_.-``).
        """
        for name in data:
            if not _NAME.fullmatch(str(name)):
                raise DatasetError(
                    f"table name {name!r} cannot be a file name: use letters, digits, '_', '.', '-'"
                )
        for name, table in data.items():
            with atomic_path(self._path / f"{self._prefix}{name}{self._suffix}") as tmp:
                table.to_csv(tmp, index=False)
        for name, file in self._files().items():
            if name not in data:
                file.unlink()

    def _exists(self) -> bool:
        return bool(self._files())

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "pattern": f"{self._prefix}{{name}}{self._suffix}"}
