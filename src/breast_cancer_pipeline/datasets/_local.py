"""The base of the datasets that live at one local path (a file or a folder)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from kedro.io import AbstractDataset

_In = TypeVar("_In")
_Out = TypeVar("_Out")


class LocalPathDataset(AbstractDataset[_In, _Out]):
    """A dataset at ``filepath`` on the local file system; subclasses add load and save."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        """Create the dataset.

        Args:
            filepath: The file or folder on the local file system.
            metadata: Free-form metadata, ignored by the dataset.
        """
        self._filepath = Path(PurePosixPath(filepath))
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
