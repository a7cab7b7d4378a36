"""A dataset of one file's raw bytes, used inside ``PartitionedDataset`` for image folders."""

from __future__ import annotations

from kedro.io import DatasetError

from breast_cancer_pipeline.datasets._atomic import write_bytes_atomic
from breast_cancer_pipeline.datasets._local import LocalPathDataset


class BinaryFileDataset(LocalPathDataset[bytes, bytes]):
    """Loads and saves a local file's bytes; saving is atomic.

    Example (an image folder in ``catalog.yml``)::

        raw_images:
          type: partitions.PartitionedDataset
          path: data/01_raw/demo
          dataset: breast_cancer_pipeline.datasets.BinaryFileDataset
    """

    def load(self) -> bytes:
        """Read the file's bytes.

        Raises:
            DatasetError: The file does not exist or cannot be read.
        """
        try:
            return self._filepath.read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read '{self._filepath}': {exc.strerror}") from exc

    def save(self, data: bytes) -> None:
        """Write ``data`` atomically, creating parent folders."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DatasetError(
                f"BinaryFileDataset '{self._filepath}' saves bytes, got {type(data).__name__}"
            )
        write_bytes_atomic(self._filepath, bytes(data))

    def _exists(self) -> bool:
        return self._filepath.is_file()
