"""A folder of named NumPy arrays (``.npy``), loaded memory-mapped."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from breast_cancer_pipeline.datasets._atomic import atomic_path


class NumpyArraysDataset(AbstractDataset[dict[str, np.ndarray], dict[str, np.ndarray]]):
    """Saves a ``dict[str, ndarray]`` as one ``.npy`` file per key in a folder.

    The folder is replaced atomically on save. Loading memory-maps numeric arrays
    (``mmap_mode="r"``) so that large image tensors are not read into memory until used.
    Object arrays are refused: use fixed-width strings (``np.str_``) for text.
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

    def save(self, data: dict[str, np.ndarray]) -> None:
        """Write every array to ``<key>.npy`` and swap the folder into place."""
        with atomic_path(self._path) as tmp:
            tmp.mkdir()
            for key, value in data.items():
                array = np.asarray(value)
                if array.dtype == object:
                    raise DatasetError(f"array '{key}' has dtype object; use a fixed-width dtype")
                np.save(tmp / f"{key}.npy", array, allow_pickle=False)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "mmap_mode": self._mmap_mode}
