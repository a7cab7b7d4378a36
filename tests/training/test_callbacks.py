"""The callbacks of a phase: which, in which order, set from the plan."""

from breast_cancer_pipeline.datasets.training_checkpoints import CheckpointDirectory
from breast_cancer_pipeline.training.callbacks import build_callbacks
from breast_cancer_pipeline.training.checkpoints import RunRecord
from breast_cancer_pipeline.training.plan import FinetunePlan
from tests.pipelines.finetune.helpers import BEST_HEAD, finetune_params


def test_the_record_runs_after_the_counters_and_before_keras_backup(tmp_path):
    params = finetune_params(early_stopping_patience=4, reduce_lr={"factor": 0.25})
    plan = FinetunePlan.from_params(params, BEST_HEAD)
    record = RunRecord("abc", histories={"phase1": {"epoch": [0, 1]}})
    store = CheckpointDirectory(tmp_path / "ckpt")
    callbacks = build_callbacks(plan, plan.phase2, store, record, publish=True)
    assert [type(c).__name__ for c in callbacks] == [
        "EarlyStopping",
        "ReduceLROnPlateau",
        "PhaseRecorder",
        "PhaseBackup",
        "EpochProgress",
    ]
    stopping, plateau, recorder, backup, progress = callbacks
    assert stopping.monitor == plateau.monitor == recorder.monitor == "val_auc"
    assert (stopping.patience, plateau.factor) == (4, 0.25)
    assert not stopping.restore_best_weights  # the recorder's best checkpoint is restored
    assert recorder.stateful == [stopping, plateau] and recorder.record is record
    assert backup.backup_dir == str(store.backup_dir("phase2"))
    assert (progress.phase, progress.epochs, progress.first_step) == ("phase2", 2, 2)
    assert progress.metrics_prefix == "finetune"
    quiet = build_callbacks(plan, plan.phase1, store, record, publish=False)[-1]
    assert quiet.metrics_prefix is None  # a worker that is not the chief only logs
