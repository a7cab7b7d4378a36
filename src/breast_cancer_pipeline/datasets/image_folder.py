"""A read-only folder of source files, listed with each file's size and modification time."""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from breast_cancer_pipeline.file_records import SourceFile, SourceListing, is_url, local_path

logger = logging.getLogger(__name__)

__all__ = ["ImageFolderDataset", "SourceFile"]


class ImageFolderDataset(AbstractDataset[Any, SourceListing]):
    """Lists every file under a folder, at any depth, as ``{relative posix path: SourceFile}``.

    Like a ``PartitionedDataset`` of binary files, but each loader also carries the file's size
    and modification time (for incremental processing) and pickles cheaply (it is sent to
    worker processes). Nothing is read until a loader is called; the folder is never written.

    Symbolic links are followed, with two guards:

    * every folder is listed once: a link to a folder already listed (a loop such as
      ``ln -s . again``, or a second path to a folder of the tree) is skipped, and one warning
      names every such link;
    * a link whose target lies outside the folder is not followed (nothing outside is listed
      or read) unless ``follow_external_links`` is true; such links are reported in the
      listing's ``refused_links``, so ingestion lists them as bad files with the reason.

    The folder may also be an fsspec URL (``s3://bucket/mammograms``, ``memory://...``; a
    ``file://`` URL is the local path): its files are listed with fsspec, with their size and
    the modification time the store gives, and read with fsspec when a loader is called (by
    this process or by the workers of a cluster, which must reach the same URL).

    Example (``catalog.yml``)::

        raw_images:
          type: breast_cancer_pipeline.datasets.ImageFolderDataset
          path: data/01_raw/demo
          follow_external_links: false
    """

    def __init__(
        self,
        path: str | None,
        follow_external_links: bool = False,
        setting: str = "ingestion.source_dir",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            path: The folder (relative to the project or absolute) or its fsspec URL;
                ``None``: no folder, an empty listing (an optional source such as
                ``ingestion.external_dir``).
            follow_external_links: List files that symbolic links lead to outside the folder
                (``ingestion.follow_external_links``); false refuses them.
            setting: The parameter that sets ``path``, named in the error when it is missing.
            metadata: Free-form metadata, ignored by the dataset.
        """
        location = None if path is None else local_path(str(path))
        self._url = location if location is not None and is_url(location) else None
        self._path = None if location is None else Path(PurePosixPath(location))
        self._setting = setting
        self._follow_external = bool(follow_external_links)
        self.metadata = metadata
        self._warned: list[tuple[str, str]] = []

    def load(self) -> SourceListing:
        """List the folder's files, sorted by relative path.

        Raises:
            DatasetError: The folder does not exist.
        """
        if self._path is None:
            return SourceListing({}, {}, frozenset())
        if self._url is not None:
            return SourceListing(_list_url(self._url, self._setting), {}, frozenset())
        if not self._path.is_dir():
            raise DatasetError(
                f"source folder '{self._path}' does not exist: set {self._setting} "
                f"(e.g. kedro run --params {self._setting}=/data/BUSI)"
            )
        walk = _Walk(self._path.resolve(), self._follow_external)
        files = walk.run()
        if walk.repeated and walk.repeated != self._warned:  # once, though a run loads twice
            self._warned = walk.repeated
            logger.warning(
                "Skipped %d symbolic link(s) to folders listed already (a loop, or a second "
                "path to the same folder): %s",
                len(walk.repeated),
                ", ".join(f"{rel!r} -> {target!r}" for rel, target in walk.repeated),
            )
        folders = frozenset(rel for rel, _ in walk.refused_folders)
        refused = dict(walk.refused_files) | dict(walk.refused_folders)
        return SourceListing(dict(sorted(files.items())), refused, folders)

    def save(self, data: Any) -> None:
        """Refuse: the source folder is never written.

        Raises:
            DatasetError: Always.
        """
        raise DatasetError(f"'{self._path}' is a read-only source folder")

    def _exists(self) -> bool:
        if self._url is not None:
            import fsspec  # noqa: PLC0415

            filesystem, root = fsspec.core.url_to_fs(self._url)
            return filesystem.isdir(root)
        return self._path is None or self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {
            "path": self._url or (None if self._path is None else str(self._path)),
            "follow_external_links": self._follow_external,
        }


def _list_url(url: str, setting: str) -> dict[str, SourceFile]:
    """Every file under the fsspec URL ``url``, at any depth, sorted by relative path.

    Raises:
        DatasetError: The folder does not exist.
    """
    import fsspec  # noqa: PLC0415 - only for a folder elsewhere

    filesystem, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    if not filesystem.isdir(root):
        raise DatasetError(
            f"source folder '{url}' does not exist or cannot be listed: set {setting} to a "
            "folder this machine and every worker can read (credentials in the environment)"
        )
    files = {}
    for full, info in sorted(filesystem.find(root, detail=True).items()):
        rel = full[len(root) :].lstrip("/")
        location = filesystem.unstrip_protocol(full)
        files[rel] = SourceFile(location, int(info["size"]), _modified_ns(info))
    return files


def _modified_ns(info: dict[str, Any]) -> int | None:
    """The modification time an fsspec listing gives (each store names it its own way)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, datetime):
            value = value.timestamp()
        if isinstance(value, int | float):
            return round(value * 1e9)
    return None


class _Walk:
    """One listing of a folder: each folder visited once, links outside refused or followed."""

    def __init__(self, root: Path, follow_external: bool) -> None:
        self.root = root
        self.follow_external = follow_external
        self.repeated: list[tuple[str, str]] = []
        self.refused_files: list[tuple[str, str]] = []
        self.refused_folders: list[tuple[str, str]] = []
        # Every folder reachable without links: a link to one of them is a second path.
        self.tree = {_identity(Path(folder)) for folder, _, _ in os.walk(root)}
        self.visited = {_identity(root)}

    def run(self) -> dict[str, SourceFile]:
        files: dict[str, SourceFile] = {}
        for folder, dirs, names in os.walk(self.root, followlinks=True):
            here = Path(folder)
            dirs[:] = [name for name in sorted(dirs) if self._enter(here / name)]
            for name in names:
                full = here / name
                try:
                    stat = full.stat()
                except OSError:
                    continue  # a dangling link or a link loop: not a file
                if not full.is_file():
                    continue
                if full.is_symlink() and not self._allowed(full):
                    self.refused_files.append((self._rel(full), os.path.realpath(full)))
                    continue
                files[self._rel(full)] = SourceFile(str(full), stat.st_size, stat.st_mtime_ns)
        return files

    def _enter(self, folder: Path) -> bool:
        """Whether to list ``folder`` (once per folder; links outside only when allowed)."""
        try:
            identity = _identity(folder)
        except OSError:
            return False
        link = folder.is_symlink()
        if identity in self.visited or (link and identity in self.tree):
            if link:
                self.repeated.append((self._rel(folder), os.readlink(folder)))
            return False
        if link and not self._allowed(folder):
            self.refused_folders.append((self._rel(folder), os.path.realpath(folder)))
            return False
        self.visited.add(identity)
        return True

    def _allowed(self, path: Path) -> bool:
        return self.follow_external or Path(os.path.realpath(path)).is_relative_to(self.root)

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _identity(folder: Path) -> tuple[int, int]:
    """``(st_dev, st_ino)`` of a folder, through links: equal for two paths to one folder."""
    stat = folder.stat()
    return stat.st_dev, stat.st_ino
