"""A Keras 3 model stored as a single ``.keras`` file, written atomically and reproducibly."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

#: The date of every member of a saved archive: the earliest a zip file can record.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class KerasModelDataset(AbstractDataset[Any, Any]):
    """Loads and saves a ``keras.Model`` as ``.keras``; TensorFlow is imported on use only.

    The project's custom layers are registered before loading, so a saved classifier loads
    in any process that has this package installed (training, serving, notebooks).

    Identical models give identical bytes: a ``.keras`` file is a zip archive, which Keras
    stamps with the time of saving (a member's date, ``date_saved`` in ``metadata.json``) and
    with memory addresses (``shared_object_id`` in ``config.json``). The saved archive has
    neither, so a deterministic rerun writes the same file and DVC reruns nothing after it.
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
        """Save the model, without timestamps, to a temporary file renamed into place."""
        from breast_cancer_pipeline.datasets._atomic import atomic_path  # noqa: PLC0415

        with atomic_path(self._filepath) as tmp:
            saved = tmp.with_suffix(".keras")  # Keras insists on the suffix
            try:
                data.save(saved)
                _write_reproducible_archive(saved, tmp)
            finally:
                saved.unlink(missing_ok=True)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


def _write_reproducible_archive(source: Path, target: Path) -> None:
    """Copy the zip archive ``source`` to ``target`` without what changes from save to save.

    Members are written in name order, each dated :data:`_ZIP_EPOCH` and compressed as Keras
    compressed it; the JSON members lose what differs between identical models (see
    :data:`_STABLE_JSON`); the weights are copied unchanged.
    """
    with zipfile.ZipFile(source) as archive, open(target, "wb") as handle:
        with zipfile.ZipFile(handle, "w") as out:
            for member in sorted(archive.infolist(), key=lambda m: m.filename):
                info = zipfile.ZipInfo(member.filename, date_time=_ZIP_EPOCH)
                info.compress_type = member.compress_type
                info.external_attr = 0o644 << 16
                if member.filename in _STABLE_JSON:
                    content = _STABLE_JSON[member.filename](json.loads(archive.read(member)))
                    out.writestr(info, json.dumps(content))
                    continue
                with archive.open(member) as src, out.open(info, "w", force_zip64=True) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        handle.flush()
        os.fsync(handle.fileno())


def _without_date_saved(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata.json`` without the time of saving (Keras does not read it back)."""
    return {key: value for key, value in metadata.items() if key != "date_saved"}


def _renumbered_shared_objects(config: Any, numbers: dict[int, int] | None = None) -> Any:
    """``config.json`` with each ``shared_object_id`` (a Python ``id()``) renumbered 0, 1, ...

    Keras only matches these ids with each other when it loads, to share one object (e.g.
    the dtype policy) between layers; numbering them in order of appearance keeps that.
    """
    numbers = {} if numbers is None else numbers
    if isinstance(config, list):
        return [_renumbered_shared_objects(item, numbers) for item in config]
    if not isinstance(config, dict):
        return config
    return {
        key: numbers.setdefault(value, len(numbers))
        if key == "shared_object_id"
        else _renumbered_shared_objects(value, numbers)
        for key, value in config.items()
    }


#: The archive's JSON members, each with the function that removes what differs between two
#: saves of identical models.
_STABLE_JSON = {
    "metadata.json": _without_date_saved,
    "config.json": _renumbered_shared_objects,
}
