"""The folder where a training node keeps its resumable checkpoints, and every file operation on it.

Checkpoints are written *during* a node (after every epoch), so they cannot be a node output
that Kedro saves at the end. Instead the catalog names the folder once, with no parameter, and
the node receives a :class:`CheckpointDirectory` handle. The node never touches a path: it asks
the handle to save, restore or discard.

Layout of the folder::

    state.json               what Keras does not keep (the node's own record, JSON)
    best.weights.h5          the best epoch of the phase in progress
    <phase>_end.weights.h5   the model at the end of each completed phase
    backup_<phase>/          keras.callbacks.BackupAndRestore's folder for that phase
                             (weights + optimizer + epoch of an interrupted phase)

Files written by the handle are atomic (a temporary file beside the target renamed into
place): a killed run leaves the previous file or the new one, never half a file. Keras writes
its backup in place; with ``double_checkpoint`` it keeps the previous one as ``*.bkp``, and
:meth:`CheckpointDirectory.discard_partial_writes` makes sure what is left is loadable.
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
#: The files ``keras.callbacks.BackupAndRestore`` (Keras 3.15) writes in its folder.
BACKUP_FILES = ("latest.weights.h5", "training_metadata.json")
BEST = "best"


@dataclass(frozen=True)
class CheckpointDirectory:
    """A handle on a checkpoint folder: a JSON state, named weights and per-phase backups.

    Attributes:
        path: The folder (created on first write).
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __str__(self) -> str:
        """The folder, quoted, for messages."""
        return f"'{self.path}'"

    def sibling(self, suffix: str) -> CheckpointDirectory:
        """A handle on ``<folder>.<suffix>`` beside this one (e.g. per non-chief worker)."""
        return CheckpointDirectory(self.path.with_name(f"{self.path.name}.{suffix}"))

    # ------------------------------------------------------------------ state
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

    # ------------------------------------------------------------------ weights
    def backup_dir(self, phase: str) -> str:
        """The folder for ``keras.callbacks.BackupAndRestore`` during ``phase``."""
        return str(self.path / f"backup_{phase}")

    def backed_up_epochs(self, phase: str) -> int:
        """Epochs of ``phase`` that Keras's backup holds (what ``BackupAndRestore`` resumes at).

        Call :meth:`discard_partial_writes` first: then the backup's metadata is readable.
        """
        metadata = Path(self.backup_dir(phase)) / BACKUP_FILES[1]
        return int(json.loads(metadata.read_text())["epoch"]) if metadata.is_file() else 0

    def save_best(self, model: Any) -> None:
        """Save the model's weights as the best of the phase in progress (atomically)."""
        self._save_weights(model, BEST)

    def restore_best(self, model: Any) -> bool:
        """Load the best weights of the phase into ``model``, if any were saved.

        Returns:
            Whether there were best weights to load.
        """
        file = self._weights_file(BEST)
        if not file.is_file():
            return False
        model.load_weights(file)
        return True

    def finish_phase(self, model: Any, phase: str, state: dict[str, Any]) -> None:
        """Record a completed phase: its final weights, then the state, then drop its backups.

        In this order a kill at any point leaves either the phase in progress (resumable from
        its backup) or the phase completed.
        """
        self._save_weights(model, f"{phase}_end")
        self.write_state(state)
        self._weights_file(BEST).unlink(missing_ok=True)
        shutil.rmtree(self.backup_dir(phase), ignore_errors=True)

    def restore_phase_end(self, model: Any, phase: str) -> None:
        """Load the weights the model had at the end of the completed ``phase``.

        Raises:
            DatasetError: The state says ``phase`` completed but its weights are missing.
        """
        file = self._weights_file(f"{phase}_end")
        if not file.is_file():
            raise DatasetError(
                f"'{self.path}' records {phase} as completed but has no '{file.name}'; "
                "set resume: false to start the training over"
            )
        model.load_weights(file)

    # ------------------------------------------------------------------ clean-up
    def discard_partial_writes(self) -> list[Path]:
        """Make a killed run's leftovers loadable: delete cut-short writes, repair backups.

        Deletes the temporaries of atomic writes. A Keras backup whose metadata cannot be read
        (the kill came while Keras wrote it) is replaced by its previous copy (``*.bkp``), or
        deleted when there is none, so that the phase restarts at its last consistent epoch.

        Returns:
            The deleted or replaced paths.
        """
        if not self.path.is_dir():
            return []
        touched = sorted(self.path.glob(".*.tmp*"))
        for path in touched:
            path.unlink()
        for backup in sorted(self.path.glob("backup_*")):
            weights, metadata = (backup / name for name in BACKUP_FILES)
            if _readable_json(metadata):
                continue
            touched.append(backup)
            previous = [Path(f"{file}.bkp") for file in (weights, metadata)]
            if all(p.is_file() for p in previous) and _readable_json(previous[1]):
                for file, copy in zip((weights, metadata), previous, strict=True):
                    os.replace(copy, file)
            else:
                shutil.rmtree(backup)
        return touched

    def discard(self) -> None:
        """Delete every checkpoint in the folder (and the folder)."""
        if self.path.is_dir():
            shutil.rmtree(self.path)

    def _weights_file(self, name: str) -> Path:
        return self.path / f"{name}.weights.h5"

    def _save_weights(self, model: Any, name: str) -> None:
        """Save a Keras model's weights (and its optimizer's) atomically as ``name``."""
        target = self._weights_file(name)
        with atomic_path(target) as tmp:
            staged = tmp.with_name(tmp.name + ".weights.h5")  # Keras insists on the suffix
            try:
                model.save_weights(staged)
                os.replace(staged, tmp)
            finally:
                staged.unlink(missing_ok=True)


def _readable_json(file: Path) -> bool:
    try:
        json.loads(file.read_text())
    except (OSError, ValueError):
        return False
    return True


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
