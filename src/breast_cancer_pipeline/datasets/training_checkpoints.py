"""The folder where a training node keeps its resumable checkpoints.

Checkpoints are written *during* a node (after every epoch), so they cannot be a node output
that Kedro saves at the end. Instead the catalog names the folder once, with no parameter, and
the node receives a :class:`CheckpointDirectory` handle whose every write is atomic (a
temporary file beside the target renamed into place): a killed run leaves either the previous
checkpoint or the new one, never half a file.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from breast_cancer_pipeline.datasets._atomic import atomic_path, write_bytes_atomic

STATE_FILE = "state.json"


@dataclass(frozen=True)
class CheckpointDirectory:
    """A handle on a checkpoint folder: a JSON state plus named weights files.

    Attributes:
        path: The folder (created on first write).
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def sibling(self, suffix: str) -> CheckpointDirectory:
        """A handle on ``<folder>.<suffix>`` beside this one (e.g. per non-chief worker)."""
        return CheckpointDirectory(self.path.with_name(f"{self.path.name}.{suffix}"))

    def read_state(self) -> dict[str, Any] | None:
        """The last saved state, or ``None`` when there is none.

        Raises:
            DatasetError: The state file exists but is not valid JSON.
        """
        file = self.path / STATE_FILE
        if not file.is_file():
            return None
        try:
            return json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"checkpoint state '{file}' is unreadable ({exc}); delete '{self.path}' to "
                "start the training over"
            ) from exc

    def write_state(self, state: dict[str, Any]) -> None:
        """Replace the state atomically."""
        write_bytes_atomic(self.path / STATE_FILE, json.dumps(state, indent=1).encode())

    def weights_file(self, name: str) -> Path:
        """Path of the weights file ``name`` (it may not exist)."""
        return self.path / f"{name}.weights.h5"

    def save_weights(self, model: Any, name: str) -> None:
        """Save a Keras model's weights (and its optimizer's) atomically as ``name``."""
        target = self.weights_file(name)
        with atomic_path(target) as tmp:
            staged = tmp.with_name(tmp.name + ".weights.h5")  # Keras insists on the suffix
            try:
                model.save_weights(staged)
                os.replace(staged, tmp)
            finally:
                staged.unlink(missing_ok=True)

    def discard_partial_writes(self) -> list[Path]:
        """Delete the temporaries a killed write left beside the checkpoint files.

        Returns:
            The deleted paths.
        """
        stale = sorted(self.path.glob(".*.tmp*")) if self.path.is_dir() else []
        for path in stale:
            path.unlink()
        return stale

    def clear(self) -> None:
        """Delete every checkpoint in the folder."""
        if self.path.is_dir():
            shutil.rmtree(self.path)


class TrainingCheckpointsDataset(AbstractDataset[None, CheckpointDirectory]):
    """Loads a :class:`CheckpointDirectory` for a folder; it cannot be saved.

    Example (``catalog.yml``)::

        finetune_checkpoints:
          type: breast_cancer_pipeline.datasets.training_checkpoints.TrainingCheckpointsDataset
          path: data/06_models/checkpoints/finetune
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        """Create the dataset.

        Args:
            path: The checkpoint folder on the local file system.
            metadata: Free-form metadata, ignored by the dataset.
        """
        self._path = Path(PurePosixPath(path))
        self.metadata = metadata

    def load(self) -> CheckpointDirectory:
        """A handle on the folder (which need not exist yet)."""
        return CheckpointDirectory(self._path)

    def save(self, data: None) -> None:
        """Refuse: training nodes write checkpoints through the handle while they run.

        Raises:
            DatasetError: Always.
        """
        raise DatasetError(
            f"'{self._path}' is a checkpoint folder: a node writes into it through the "
            "handle it loads, it is not a node output"
        )

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
