"""A read-only folder of source files, listed with each file's size and modification time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError


@dataclass(frozen=True)
class SourceFile:
    """One source file: call it to read its bytes (a picklable, lazy loader).

    ``size`` and ``mtime_ns`` are taken when the folder is listed; together with the path
    they tell an incremental step whether the file changed since it was last processed,
    without reading it.

    Attributes:
        path: Absolute path of the file.
        size: Size in bytes.
        mtime_ns: Modification time in nanoseconds.
    """

    path: str
    size: int
    mtime_ns: int

    def __call__(self) -> bytes:
        """Read the file's bytes.

        Raises:
            OSError: The file cannot be read (removed, permissions, I/O error).
        """
        return Path(self.path).read_bytes()


class ImageFolderDataset(AbstractDataset[Any, dict[str, SourceFile]]):
    """Lists every file under a folder, at any depth, as ``{relative posix path: SourceFile}``.

    Like a ``PartitionedDataset`` of binary files, but each loader also carries the file's size
    and modification time (for incremental processing) and pickles cheaply (it is sent to
    worker processes). Nothing is read until a loader is called; the folder is never written.

    Example (``catalog.yml``)::

        raw_images:
          type: breast_cancer_pipeline.datasets.ImageFolderDataset
          path: data/01_raw/demo
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        """Create the dataset.

        Args:
            path: The folder (relative to the project or absolute).
            metadata: Free-form metadata, ignored by the dataset.
        """
        self._path = Path(PurePosixPath(str(path)))
        self.metadata = metadata

    def load(self) -> dict[str, SourceFile]:
        """List the folder's files, sorted by relative path; symbolic links are followed.

        Raises:
            DatasetError: The folder does not exist.
        """
        if not self._path.is_dir():
            raise DatasetError(
                f"source folder '{self._path}' does not exist: set ingestion.source_dir "
                "(e.g. kedro run --params ingestion.source_dir=/data/BUSI)"
            )
        root = self._path.resolve()
        files: dict[str, SourceFile] = {}
        for folder, dirs, names in os.walk(root, followlinks=True):
            dirs.sort()
            for name in names:
                full = Path(folder, name)
                try:
                    stat = full.stat()
                except OSError:
                    continue  # a dangling link: not a file
                if not full.is_file():
                    continue
                rel = full.relative_to(root).as_posix()
                files[rel] = SourceFile(str(full), stat.st_size, stat.st_mtime_ns)
        return dict(sorted(files.items()))

    def save(self, data: Any) -> None:
        """Refuse: the source folder is never written.

        Raises:
            DatasetError: Always.
        """
        raise DatasetError(f"'{self._path}' is a read-only source folder")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
