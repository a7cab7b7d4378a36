"""Datasets for the packaged model: the served bundle and the TF Serving export."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from breast_cancer_pipeline.datasets._atomic import atomic_path
from breast_cancer_pipeline.datasets._local import LocalPathDataset

_MODEL_FILE = "model.keras"
_CONFIG_FILE = "serving.json"
#: With an ensemble, the members after the first (``model.keras``), averaged with it.
_MEMBERS_DIR = "members"
_OOD_FILE = "ood.npz"


class ServingModelDataset(LocalPathDataset[Any, Any]):
    """A :class:`~breast_cancer_pipeline.serving.ServingModel` as a folder, written atomically.

    The folder holds ``model.keras``, ``serving.json`` (class names, image size, colour
    mode, positive class, threshold), an ensemble's other members as ``members/<i>.keras``
    and, when the model has one, ``ood.npz``: the fitted out-of-distribution score
    (:meth:`~breast_cancer_pipeline.evaluation.ood.OodScore.to_arrays`, plain arrays read
    without pickle). A folder without ``ood.npz`` loads with no score. A tile model combined
    by the attention head carries it as the file its ``tiles.attention_head`` names. The
    served network exported for other runtimes, when the model carries it, sits beside them
    as ``model.onnx`` and ``model.tflite``
    (:data:`~breast_cancer_pipeline.serving.export.EXPORT_FILES`). It is the artefact
    kedro-mlflow bundles into the registered pyfunc model (so the exported files are logged
    with each model version), so it must be a local path.
    """

    def load(self) -> Any:
        """Load the model and its configuration.

        Raises:
            DatasetError: The folder or one of its files is missing.
        """
        model_file, config_file = self._filepath / _MODEL_FILE, self._filepath / _CONFIG_FILE
        if not (model_file.is_file() and config_file.is_file()):
            raise DatasetError(
                f"no packaged model at '{self._filepath}' (needs {_MODEL_FILE} and "
                f"{_CONFIG_FILE}): run the reporting pipeline first"
            )
        from breast_cancer_pipeline.modeling import load_model
        from breast_cancer_pipeline.serving import ServingModel
        from breast_cancer_pipeline.serving.export import EXPORT_FILES

        config = json.loads(config_file.read_text())
        members = [load_model(path) for path in self._member_files()]
        served = ServingModel(load_model(model_file), config, members, ood=self._load_ood())
        head_file = (config.get("tiles") or {}).get("attention_head")
        if head_file:
            served.attention_head = load_model(self._filepath / head_file)
        files = {kind: self._filepath / name for kind, name in EXPORT_FILES.items()}
        exports = {kind: path.read_bytes() for kind, path in files.items() if path.is_file()}
        return served.with_exports(exports) if exports else served

    def _member_files(self) -> list[Path]:
        """The other members of an ensemble, in order (``members/1.keras``...)."""
        folder = self._filepath / _MEMBERS_DIR
        files = folder.glob("*.keras") if folder.is_dir() else []
        return sorted(files, key=lambda path: int(path.stem))

    def _load_ood(self) -> Any:
        ood_file = self._filepath / _OOD_FILE
        if not ood_file.is_file():
            return None
        from breast_cancer_pipeline.evaluation.ood import OodScore

        with np.load(ood_file, allow_pickle=False) as arrays:
            try:
                return OodScore.from_arrays(dict(arrays))
            except ValueError as exc:
                raise DatasetError(f"'{ood_file}': {exc}") from exc

    def save(self, data: Any) -> None:
        """Write the model and configuration to a new folder, then swap it into place."""
        with atomic_path(self._filepath) as tmp:
            tmp.mkdir()
            data.model.save(tmp / _MODEL_FILE)
            if len(data.members) > 1:
                (tmp / _MEMBERS_DIR).mkdir()
                for i, member in enumerate(data.members[1:], start=1):
                    member.save(tmp / _MEMBERS_DIR / f"{i}.keras")
            (tmp / _CONFIG_FILE).write_text(json.dumps(data.config, indent=2) + "\n")
            if getattr(data, "ood", None) is not None:
                np.savez(tmp / _OOD_FILE, **data.ood.to_arrays())
            if getattr(data, "attention_head", None) is not None:
                data.attention_head.save(tmp / data.config["tiles"]["attention_head"])
            self._save_exports(tmp, getattr(data, "exports", {}))

    @staticmethod
    def _save_exports(folder: Path, exports: Any) -> None:
        """Write each exported graph of the model under its file name."""
        from breast_cancer_pipeline.serving.export import EXPORT_FILES

        for kind, graph in exports.items():
            (folder / EXPORT_FILES[kind]).write_bytes(graph)

    def _exists(self) -> bool:
        return (self._filepath / _CONFIG_FILE).is_file()


class TFServingExportDataset(AbstractDataset[Any, list[str]]):
    """Exports a Keras model as a TF Serving SavedModel under ``<path>/<version>/``.

    Each save writes the next integer version (TF Serving loads the highest); older versions
    stay. Loading lists the versions present.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        """Create the dataset.

        Args:
            path: The model base path TF Serving is pointed at (``--model_base_path``).
            metadata: Free-form metadata, ignored by the dataset.
        """
        self._path = Path(PurePosixPath(path))
        self.metadata = metadata

    def _versions(self) -> list[int]:
        if not self._path.is_dir():
            return []
        return sorted(int(p.name) for p in self._path.iterdir() if re.fullmatch(r"\d+", p.name))

    def load(self) -> list[str]:
        """The exported version folders, oldest first."""
        return [str(self._path / str(v)) for v in self._versions()]

    def save(self, data: Any) -> None:
        """Export ``data`` (a Keras model) as the next version.

        Raises:
            DatasetError: The export failed.
        """
        version = (self._versions() or [0])[-1] + 1
        try:
            with atomic_path(self._path / str(version)) as tmp:
                data.export(str(tmp), format="tf_saved_model", verbose=False)
        except Exception as exc:
            raise DatasetError(f"TF Serving export to '{self._path}' failed: {exc}") from exc

    def _exists(self) -> bool:
        return bool(self._versions())

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
