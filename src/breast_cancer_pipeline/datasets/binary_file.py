"""A dataset of one file's raw bytes, used inside ``PartitionedDataset`` for image folders."""

from __future__ import annotations

from typing import Any

from kedro.io import DatasetError

from breast_cancer_pipeline.datasets._atomic import write_bytes_atomic
from breast_cancer_pipeline.datasets._local import LocalPathDataset
from breast_cancer_pipeline.file_records import is_url, local_path, read_bytes


class BinaryFileDataset(LocalPathDataset[bytes, bytes]):
    """Loads and saves a local file's bytes (saving is atomic); loads a URL's bytes.

    ``filepath`` may be an fsspec URL (``s3://bucket/key``, ``memory://...``; a ``file://``
    URL is the local path), so that a ``PartitionedDataset`` of these lists and reads a
    folder elsewhere (the batch command's ``inference.source_dir``). Such a file is read
    only: outputs are written in the project.

    Example (an image folder in ``catalog.yml``)::

        raw_images:
          type: partitions.PartitionedDataset
          path: data/01_raw/demo
          dataset: breast_cancer_pipeline.datasets.BinaryFileDataset
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        """Create the dataset.

        Args:
            filepath: The file: a local path, or an fsspec URL to read.
            metadata: Free-form metadata, ignored by the dataset.
        """
        location = local_path(filepath)
        super().__init__(location, metadata)
        self._url = location if is_url(location) else None

    def load(self) -> bytes:
        """Read the file's bytes.

        Raises:
            DatasetError: The file does not exist or cannot be read.
        """
        location = self._url or str(self._filepath)
        try:
            return read_bytes(location)
        except OSError as exc:
            raise DatasetError(f"cannot read '{location}': {exc.strerror or exc}") from exc

    def save(self, data: bytes) -> None:
        """Write ``data`` atomically, creating parent folders.

        Raises:
            DatasetError: ``data`` is not bytes, or the file is a URL (read only).
        """
        if self._url is not None:
            raise DatasetError(
                f"BinaryFileDataset '{self._url}' is read only: write outputs to a path in "
                "the project"
            )
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DatasetError(
                f"BinaryFileDataset '{self._filepath}' saves bytes, got {type(data).__name__}"
            )
        write_bytes_atomic(self._filepath, bytes(data))

    def _exists(self) -> bool:
        if self._url is not None:
            import fsspec  # noqa: PLC0415 - only for a file elsewhere

            filesystem, path = fsspec.core.url_to_fs(self._url)
            return filesystem.isfile(path)
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._url or str(self._filepath)}
