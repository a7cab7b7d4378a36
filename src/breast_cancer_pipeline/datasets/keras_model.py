"""A Keras 3 model stored as a single ``.keras`` file, written atomically."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError


class KerasModelDataset(AbstractDataset[Any, Any]):
    """Loads and saves a ``keras.Model`` as ``.keras``; TensorFlow is imported on use only.

    The project's custom layers are registered before loading, so a saved classifier loads
    in any process that has this package installed (training, serving, notebooks).
    """

    def __init__(
        self,
        filepath: str,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            filepath: Path of the ``.keras`` file.
            load_args: Extra keyword arguments for ``keras.saving.load_model``.
            metadata: Free-form metadata, ignored by the dataset.
        """
        self._filepath = Path(PurePosixPath(filepath))
        if self._filepath.suffix != ".keras":
            raise DatasetError(f"KerasModelDataset needs a '.keras' file, got '{filepath}'")
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def load(self) -> Any:
        """Load the model.

        Raises:
            DatasetError: The file is missing.
        """
        if not self._filepath.is_file():
            raise DatasetError(f"no model at '{self._filepath}': run the finetune stage first")
        from breast_cancer_pipeline.modeling import load_model  # noqa: PLC0415

        return load_model(self._filepath, **self._load_args)

    def save(self, data: Any) -> None:
        """Save the model to a temporary file beside the target and rename it into place."""
        from breast_cancer_pipeline.datasets._atomic import atomic_path  # noqa: PLC0415

        with atomic_path(self._filepath.with_suffix(".keras")) as tmp:
            data.save(tmp.with_suffix(".keras"))
            tmp.with_suffix(".keras").rename(tmp)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
