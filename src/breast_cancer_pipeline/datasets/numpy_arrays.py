"""A folder of named NumPy arrays (``.npy``), written a row at a time, loaded memory-mapped."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from breast_cancer_pipeline.datasets._atomic import atomic_path
from breast_cancer_pipeline.file_records import ArrayRows


class NumpyArraysDataset(AbstractDataset[dict[str, np.ndarray], dict[str, np.ndarray]]):
    """Saves a ``dict[str, ndarray]`` as one ``.npy`` file per key in a folder.

    The folder is replaced atomically on save. An :class:`ArrayRows` value is written a row
    at a time, straight to its file (not through a memory map, whose written pages would count
    in the process's resident memory), so saving holds one row and a write buffer, not the
    array. Loading memory-maps numeric arrays (``mmap_mode="r"``) so that large image tensors
    are not read into memory until used. Object arrays are refused: use fixed-width strings
    (``np.str_``) for text.
    """

    def __init__(
        self,
        path: str,
        mmap_mode: str | None = "r",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            path: Folder that holds the ``.npy`` files.
            mmap_mode: ``np.load``'s ``mmap_mode`` (``None`` reads arrays into memory).
            metadata: Free-form metadata, ignored by the dataset.
        """
        self._path = Path(PurePosixPath(path))
        self._mmap_mode = mmap_mode
        self.metadata = metadata

    def load(self) -> dict[str, np.ndarray]:
        """Load every array of the folder, keyed by file stem.

        Raises:
            DatasetError: The folder does not exist.
        """
        if not self._path.is_dir():
            raise DatasetError(f"no arrays at '{self._path}': run the stage that writes it first")
        return {
            file.stem: np.load(file, mmap_mode=self._mmap_mode, allow_pickle=False)
            for file in sorted(self._path.glob("*.npy"))
        }

    def save(self, data: dict[str, np.ndarray | ArrayRows]) -> None:
        """Write every array to ``<key>.npy`` and swap the folder into place.

        Raises:
            DatasetError: An array has dtype object, or an :class:`ArrayRows` yields another
                number of rows than its shape says.
        """
        with atomic_path(self._path) as tmp:
            tmp.mkdir()
            for key, value in data.items():
                if isinstance(value, ArrayRows):
                    _write_rows(tmp / f"{key}.npy", key, value)
                    continue
                array = np.asarray(value)
                if array.dtype == object:
                    raise DatasetError(f"array '{key}' has dtype object; use a fixed-width dtype")
                np.save(tmp / f"{key}.npy", array, allow_pickle=False)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "mmap_mode": self._mmap_mode}


def _write_rows(path: Path, key: str, value: ArrayRows) -> None:
    """Write an ``.npy`` file: its header, then each row as it comes."""
    dtype = np.dtype(value.dtype)
    if dtype.hasobject:
        raise DatasetError(f"array '{key}' has dtype object; use a fixed-width dtype")
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
    row_shape = tuple(value.shape[1:])
    count = 0
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {**header, "shape": tuple(value.shape)})
        for row in value.rows():
            pixels = np.ascontiguousarray(row, dtype=dtype)
            if pixels.shape != row_shape:
                raise DatasetError(
                    f"array '{key}': row {count} has shape {pixels.shape}, not {row_shape}"
                )
            handle.write(pixels.tobytes())
            count += 1
    if count != len(value):
        raise DatasetError(f"array '{key}' should have {len(value)} rows, got {count}")
