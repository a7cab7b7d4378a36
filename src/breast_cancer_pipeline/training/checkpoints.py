"""Resumable training: what a killed phase needs to continue where it stopped.

- :class:`PhaseBackup`: Keras's ``BackupAndRestore`` (the weights, optimizer and epoch of the
  phase in progress), made to leave the next phase alone.
- :class:`RunRecord` and :class:`PhaseRecorder`: the rest (per-epoch history, best weights,
  early-stopping and plateau counters, completed phases, fingerprint), kept in the state of
  the checkpoint folder.
- :func:`fingerprint` of the settings and data a checkpoint was made with, and
  :func:`resume_record`, the record a run continues from.

Every checkpoint file is read, written and deleted by the checkpoint handle
(:class:`~breast_cancer_pipeline.datasets.training_checkpoints.CheckpointDirectory`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

logger = logging.getLogger(__name__)


class PhaseBackup(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` that leaves the next ``fit`` of the model alone.

    When it restores a backup, Keras 3.15 sets the model's ``_initial_epoch`` and never resets
    it, so the next ``fit`` of the same model (the next phase) would start at that epoch.
    """

    def on_train_end(self, logs: dict | None = None) -> None:
        """Keras's end of training, then forget the restored epoch."""
        super().on_train_end(logs)
        self.model._initial_epoch = None


#: The keys of the checkpoint state (:meth:`RunRecord.to_state`).
STATE_KEYS = ("fingerprint", "completed", "histories", "phase", "epochs")
#: Counters of EarlyStopping / ReduceLROnPlateau that ``on_train_begin`` resets.
COUNTERS = ("best", "wait", "cooldown_counter")


@dataclass
class RunRecord:
    """What a resumed training needs beyond Keras's backup, kept in the checkpoint state.

    ``BackupAndRestore`` restores the weights, the optimizer and the epoch of the phase in
    progress. This record adds the completed phases and their histories, and per epoch of
    the phase in progress its logs, the best score so far, whether it stopped the phase, and
    the counters of the early-stopping and plateau callbacks (which Keras resets).
    """

    fingerprint: str
    completed: list[str] = field(default_factory=list)
    histories: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    phase: str | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RunRecord:
        """The record saved as ``state`` (see :meth:`to_state`)."""
        return cls(**{key: state[key] for key in STATE_KEYS})

    def to_state(self) -> dict[str, Any]:
        """The JSON-serialisable state (``epochs_done`` is for people reading it)."""
        state = {key: getattr(self, key) for key in STATE_KEYS}
        return {**state, "epochs_done": len(self.epochs)}

    @property
    def steps_done(self) -> int:
        """Epochs of the completed phases (the global step of the next phase's first epoch)."""
        return sum(len(history["epoch"]) for history in self.histories.values())

    def epochs_of(self, phase: str) -> list[dict[str, Any]]:
        """The recorded epochs of ``phase`` when it is the phase in progress, else none."""
        return list(self.epochs) if self.phase == phase else []

    def complete(self, phase: str) -> None:
        """Move the phase in progress to the completed ones, with its history."""
        history: dict[str, list[float]] = {}
        for epoch in self.epochs_of(phase):
            for key, value in epoch["logs"].items():
                history.setdefault(key, []).append(value)
        history["epoch"] = list(range(self.steps_done, self.steps_done + len(self.epochs)))
        self.histories[phase] = history
        self.completed.append(phase)
        self.phase, self.epochs = None, []


class PhaseRecorder(keras.callbacks.Callback):
    """Records every epoch in the :class:`RunRecord` and saves the best weights and the state.

    Put it after the early-stopping and plateau callbacks (their counters then include the
    epoch) and before ``BackupAndRestore``: the state is never behind Keras's backup, and on a
    resumed run the record is cut back to the epoch Keras restored.

    Args:
        checkpoints: A :class:`~breast_cancer_pipeline.datasets.training_checkpoints.
            CheckpointDirectory`.
        record: The run's record; this phase's epochs are appended to it.
        phase: Name of the training phase (``phase1``/``phase2``).
        stateful: Callbacks whose counters are saved and restored.
        monitor: Metric to maximise (the best weights).
    """

    def __init__(
        self,
        checkpoints: Any,
        record: RunRecord,
        phase: str,
        stateful: Sequence[keras.callbacks.Callback],
        monitor: str,
    ) -> None:
        super().__init__()
        self.checkpoints = checkpoints
        self.record = record
        self.phase = phase
        self.stateful = list(stateful)
        self.monitor = monitor
        self._first_epoch = True

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Start this phase's record, unless it is the phase being resumed."""
        if self.record.phase != self.phase:
            self.record.phase, self.record.epochs = self.phase, []
        self._first_epoch = True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """At the first epoch, restore the counters of the epoch Keras resumes after."""
        if not self._first_epoch:
            return
        self._first_epoch = False
        del self.record.epochs[epoch:]  # a no-op when the record was matched to the backup
        if self.record.epochs:
            saved = self.record.epochs[-1]["callbacks"]
            for callback, counters in zip(self.stateful, saved, strict=True):
                for key, value in counters.items():
                    setattr(callback, key, value)
            logger.info("Resuming %s at epoch %d", self.phase, epoch + 1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Save the best weights when the monitored metric improved, then the state."""
        logs = {key: float(value) for key, value in (logs or {}).items()}
        previous = self.record.epochs[-1]["best"] if self.record.epochs else -math.inf
        score = logs.get(self.monitor, math.nan)
        if score > previous:
            self.checkpoints.save_best(self.model)
        self.record.epochs.append(
            {
                "logs": logs,
                "best": score if score > previous else previous,
                "stopped": bool(self.model.stop_training),
                "callbacks": [
                    {key: _plain(getattr(cb, key)) for key in COUNTERS if hasattr(cb, key)}
                    for cb in self.stateful
                ],
            }
        )
        self.checkpoints.write_state(self.record.to_state())


def _plain(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def fingerprint(*parts: Any) -> str:
    """A short, stable hash of JSON-serialisable settings and arrays (to match checkpoints)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str((part.shape, part.dtype.str)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def resume_record(checkpoints: Any, run_fingerprint: str, resume: bool) -> RunRecord:
    """The record to continue from (``resume`` and a matching checkpoint), else a new one.

    Without ``resume`` the checkpoint is deleted. With it, writes cut short by a kill are
    repaired first, and the record is cut back to the epochs Keras backed up.

    Args:
        checkpoints: This worker's checkpoint handle
            (:class:`~breast_cancer_pipeline.datasets.training_checkpoints.CheckpointDirectory`).
        run_fingerprint: The :func:`fingerprint` of the run's settings and data.
        resume: ``finetune.resume``.

    Raises:
        ValueError: ``resume`` is true but the checkpoint was made by other settings or data.
    """
    if not resume:
        checkpoints.discard()
        return RunRecord(run_fingerprint)
    for path in checkpoints.discard_partial_writes():
        logger.info("Deleted or repaired %s, a checkpoint write cut short by the kill", path)
    state = checkpoints.read_state()
    if state is None:
        logger.info("finetune.resume is true but %s holds no checkpoint: starting", checkpoints)
        return RunRecord(run_fingerprint)
    if state.get("fingerprint") != run_fingerprint:
        raise ValueError(
            f"finetune.resume is true but the checkpoint in {checkpoints} was made with other "
            "parameters, backbone or data. Set finetune.resume: false to start over (the "
            "checkpoint is then deleted)"
        )
    record = RunRecord.from_state(state)
    if record.phase is not None:
        # The record may be one epoch ahead of Keras's backup (killed between the two).
        del record.epochs[checkpoints.backed_up_epochs(record.phase) :]
    return record
