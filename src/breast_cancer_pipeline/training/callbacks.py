"""The callbacks of one training phase, an explicit list built from the plan.

Early stopping and learning-rate reduction (Keras's), the record of what Keras does not back
up (:mod:`.checkpoints`), Keras's ``BackupAndRestore``, and the progress of each epoch
(:mod:`.progress`).
"""

from __future__ import annotations

from typing import Any

import keras

from breast_cancer_pipeline.training.checkpoints import PhaseBackup, PhaseRecorder, RunRecord
from breast_cancer_pipeline.training.plan import FinetunePlan, PhasePlan
from breast_cancer_pipeline.training.progress import EpochProgress

#: Monitored by early stopping, learning-rate reduction and the best checkpoint.
MONITOR = "val_auc"
#: Prefix of the metrics published every epoch (``finetune.val_auc``...).
METRICS_PREFIX = "finetune"


def build_callbacks(
    plan: FinetunePlan, phase: PhasePlan, checkpoints: Any, record: RunRecord, publish: bool
) -> list[keras.callbacks.Callback]:
    """The callbacks of one phase, in the order they must run at the end of each epoch.

    Early stopping and learning-rate reduction on validation AUROC update their counters;
    :class:`~.checkpoints.PhaseRecorder` records the epoch (history, those counters, the best
    weights) in ``record`` and the checkpoint state; Keras's ``BackupAndRestore``
    (:class:`~.checkpoints.PhaseBackup`) then backs up the weights, the optimizer and the
    epoch (keeping the previous backup, and leaving the folder for the checkpoint handle to
    delete when the phase is recorded complete); last, the epoch's progress line and
    published metrics (:class:`~.progress.EpochProgress`).

    Args:
        plan: The run's plan.
        phase: The phase these callbacks train.
        checkpoints: This worker's checkpoint handle
            (:class:`~breast_cancer_pipeline.datasets.training_checkpoints.CheckpointDirectory`).
        record: The run's record.
        publish: Publish the epochs' metrics (``finetune.<metric>``, step = global epoch).
    """
    stopping = keras.callbacks.EarlyStopping(
        monitor=MONITOR,
        mode="max",
        patience=plan.early_stopping_patience,
        restore_best_weights=False,  # the best checkpoint is restored instead
    )
    plateau = keras.callbacks.ReduceLROnPlateau(monitor=MONITOR, mode="max", **plan.reduce_lr)
    return [
        stopping,
        plateau,
        PhaseRecorder(checkpoints, record, phase.name, [stopping, plateau], MONITOR),
        PhaseBackup(
            checkpoints.backup_dir(phase.name), double_checkpoint=True, delete_checkpoint=False
        ),
        EpochProgress(
            phase.name, phase.epochs, record.steps_done, METRICS_PREFIX if publish else None
        ),
    ]
