"""The plain records that ingestion's nodes and the file datasets hand each other.

Nodes build and read these; the datasets in :mod:`breast_cancer_pipeline.datasets` do the I/O.
Keeping them here, in a module that imports neither Kedro nor any dataset, lets the nodes stay
free of dataset imports (and of whatever those datasets import).

- :class:`SourceFile`: one file of the source folder, read lazily (``ImageFolderDataset``).
- :class:`FileTask` and :class:`StorePlan`: what ``ImageStoreDataset`` must produce.
- :class:`StoreCommit`: the second phase of a store save, once the manifest is written.
- :class:`StoredFiles`: what ``ImageStoreDataset`` loads: ``{path: loader}`` plus records.
- :class:`ArrayRows`: an array that ``NumpyArraysDataset`` writes a row at a time.
- :func:`read_bytes`: a file's bytes from a local path or an fsspec URL (``s3://...``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: What a task produces: one file's bytes, several files ``{store path: bytes}``, or ``None``.
TaskContent = bytes | Mapping[str, bytes] | None


@dataclass(frozen=True)
class SourceFile:
    """One source file: call it to read its bytes (a picklable, lazy loader).

    ``size`` and ``mtime_ns`` are taken when the folder is listed; together with the path
    they tell an incremental step whether the file changed since it was last processed,
    without reading it.

    Attributes:
        path: Absolute path of the file, or its fsspec URL (:func:`read_bytes`).
        size: Size in bytes.
        mtime_ns: Modification time in nanoseconds; None when the file system gives none
            (the file is then processed again on every run).
    """

    path: str
    size: int
    mtime_ns: int | None

    def __call__(self) -> bytes:
        """Read the file's bytes.

        Raises:
            OSError: The file cannot be read (removed, permissions, I/O error).
        """
        return read_bytes(self.path)


def is_url(location: str) -> bool:
    """Whether ``location`` is an fsspec URL of another file system than this machine's.

    ``s3://bucket/key``, ``gs://...``, ``memory://...`` are; a path and a ``file://`` URL
    (the same path: :func:`local_path`) are not.
    """
    protocol, sep, _ = str(location).partition("://")
    return bool(sep) and protocol not in ("file", "local")


def local_path(location: str) -> str:
    """``location`` with a ``file://`` scheme removed (``file:///data/x`` is ``/data/x``)."""
    location = str(location)
    for scheme in ("file://", "local://"):
        if location.startswith(scheme):
            return location[len(scheme) :]
    return location


def read_bytes(location: str) -> bytes:
    """The bytes of the file at ``location``: a local path or an fsspec URL.

    A URL is read with fsspec (its package for the protocol installed: ``s3fs`` for
    ``s3://``, ``gcsfs`` for ``gs://``...; credentials from the environment).

    Raises:
        OSError: The file cannot be read (missing, permissions, I/O error).
    """
    if not is_url(location):
        return Path(local_path(location)).read_bytes()
    import fsspec  # noqa: PLC0415 - only for files elsewhere

    with fsspec.open(location, "rb") as handle:
        return handle.read()


class SourceListing(dict[str, SourceFile]):
    """``{path relative to the folder: SourceFile}``, plus the symbolic links not followed.

    Attributes:
        refused_links: ``{relative path of the link: its resolved target}`` for links that
            lead outside the folder and were neither listed nor read (see
            ``ImageFolderDataset``'s ``follow_external_links``).
        folder_links: The relative paths among ``refused_links`` that lead to folders.
    """

    def __init__(
        self,
        files: Mapping[str, SourceFile],
        refused_links: Mapping[str, str],
        folder_links: frozenset[str],
    ) -> None:
        """Create the listing (done by ``ImageFolderDataset.load``)."""
        super().__init__(files)
        self.refused_links = dict(refused_links)
        self.folder_links = folder_links


@dataclass(frozen=True)
class FileTask:
    """How to produce the file(s) of one entry of the store.

    Attributes:
        key: Fingerprint of everything the output depends on. An entry whose recorded key is
            equal (and whose files are intact) is reused; ``None`` means "always produce".
        produce: Picklable callable returning ``(content, record)``: the entry's bytes (stored
            at the entry's path), or ``{store path: bytes}`` for several files (e.g. the pages
            of one source), or ``None`` when nothing can be produced; and a JSON-serialisable
            dict stored in the journal (statistics, or the reason of a failure).
    """

    key: str | None
    produce: Callable[[], tuple[TaskContent, dict[str, Any]]]


@dataclass(frozen=True)
class StorePlan:
    """What the store must hold after a save, and how to produce it.

    Attributes:
        files: ``{entry path relative to the store: task}``.
        workers: Worker processes for the tasks (1: in this process).
        tasks_per_worker: Tasks in flight per worker process (bounds memory).
        progress_seconds: Seconds between two progress lines (count, rate, ETA).
        cluster: The ``cluster`` parameters: with an ``address``, the tasks run on that Dask
            cluster (``workers`` sizes a ``local`` one) instead of this machine's processes.
    """

    files: Mapping[str, FileTask]
    workers: int
    tasks_per_worker: int
    progress_seconds: float
    cluster: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StoreCommit:
    """The second phase of a store save: swap the new files in, remove the superseded ones.

    Saved once the manifest that points at the new files is written, so that a run killed at
    any moment leaves a manifest whose every path exists.

    Attributes:
        referenced: The paths the new manifest points at; each must be a file of the store.
    """

    referenced: tuple[str, ...]


class StoredFiles(Mapping[str, Callable[[], bytes]]):
    """``{path: loader}`` of the store's files, plus the journal records in ``.records``.

    Attributes:
        records: One row per entry of the last completed save: ``path``, ``key``, ``ok``,
            ``bytes`` and the fields of the task's record.
    """

    def __init__(self, locations: Mapping[str, tuple[str, ...]], records: Any) -> None:
        """Create the view (done by ``ImageStoreDataset.load``).

        Args:
            locations: ``{path: candidate absolute paths}``, the newest first (a file waiting
                to be swapped in, then its place in the store).
            records: The journal records, a DataFrame.
        """
        self._locations = dict(locations)
        self.records = records

    def __getitem__(self, path: str) -> Callable[[], bytes]:
        return FileLoader(self._locations[path])

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._locations))

    def __len__(self) -> int:
        return len(self._locations)


@dataclass(frozen=True)
class FileLoader:
    """Reads the first of ``candidates`` that exists (a staged file may be swapped in meanwhile).

    Attributes:
        candidates: Absolute paths, the newest version first.
    """

    candidates: tuple[str, ...]

    def __call__(self) -> bytes:
        """Read the file's bytes.

        Raises:
            FileNotFoundError: None of the candidates exists.
        """
        for candidate in self.candidates[:-1]:
            try:
                return Path(candidate).read_bytes()
            except FileNotFoundError:
                continue
        return Path(self.candidates[-1]).read_bytes()


@dataclass(frozen=True)
class ArrayRows:
    """An array made one row at a time, so that it is written without being held in memory.

    The node that returns it does no I/O: ``NumpyArraysDataset`` writes the rows to the
    array's ``.npy`` file as they come, so memory holds one row, not the array. Anything else
    that needs the values (a test, an in-memory catalog) gets them with ``np.asarray``, which
    builds the whole array.

    Attributes:
        shape: The whole array's shape, rows first.
        dtype: Its dtype.
        rows: Called once per use; yields the rows in order, each of shape ``shape[1:]``.
    """

    shape: tuple[int, ...]
    dtype: Any
    rows: Callable[[], Iterator[np.ndarray]]

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        count = 0
        for count, row in enumerate(self.rows(), start=1):
            out[count - 1] = row
        if count != len(self):
            raise ValueError(f"expected {len(self)} rows, got {count}")
        return out if dtype is None else out.astype(dtype, copy=False)
