"""Resumable phases: Keras's backup resumes the killed phase, and only that one."""

from pathlib import Path

import numpy as np
import pytest

from breast_cancer_pipeline.datasets.training_checkpoints import CheckpointDirectory


def _interrupted_fit(store, epochs_done, epochs=5):
    """A model trained ``epochs_done`` epochs of ``epochs`` under PhaseBackup, then killed."""
    import keras

    from breast_cancer_pipeline.training.checkpoints import PhaseBackup

    class Killed(Exception):
        pass

    class KillAt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == epochs_done:
                raise Killed

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.01), loss="mse")
    backup = PhaseBackup(
        store.backup_dir("phase1"), double_checkpoint=True, delete_checkpoint=False
    )
    with pytest.raises(Killed):
        model.fit(
            np.ones((8, 3)), np.ones((8, 2)), epochs=epochs, callbacks=[backup, KillAt()], verbose=0
        )
    return model, backup


def test_keras_backup_resumes_the_killed_phase_and_only_that_one(tmp_path):
    import keras

    store = CheckpointDirectory(tmp_path / "ckpt")
    model, backup = _interrupted_fit(store, epochs_done=3)
    assert store.backed_up_epochs("phase1") == 3
    assert store.backed_up_epochs("phase2") == 0
    model.optimizer.learning_rate.assign(0.5)  # the backup restores the optimizer too
    history = model.fit(np.ones((8, 3)), np.ones((8, 2)), epochs=5, callbacks=[backup], verbose=0)
    assert len(history.history["loss"]) == 2  # epochs 4 and 5 only
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    # The next phase's fit of the same model runs all its epochs (Keras alone would skip 3).
    model.compile(keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(np.ones((8, 3)), np.ones((8, 2)), epochs=4, verbose=0)
    assert len(history.history["loss"]) == 4


def test_a_backup_cut_short_falls_back_to_the_previous_one(tmp_path):
    store = CheckpointDirectory(tmp_path / "ckpt")
    _interrupted_fit(store, epochs_done=3)
    backup = Path(store.backup_dir("phase1"))
    (backup / "training_metadata.json").write_text('{"epo')  # killed while Keras wrote it
    (store.path / ".state.json.x1.tmp").write_text("{")  # and one of our atomic writes
    touched = store.discard_partial_writes()
    assert touched == [store.path / ".state.json.x1.tmp", backup]
    assert store.backed_up_epochs("phase1") == 2  # Keras's previous copy (double_checkpoint)
    assert not list(backup.glob("*.bkp"))
    # With no previous copy to fall back to, the backup goes and the phase restarts.
    (backup / "training_metadata.json").write_text("")
    store.discard_partial_writes()
    assert not backup.exists()
    assert store.backed_up_epochs("phase1") == 0


def _epoch(val_auc):
    return {"logs": {"val_auc": val_auc}, "best": val_auc, "stopped": False, "callbacks": []}


def test_a_completed_phase_numbers_its_epochs_after_the_phases_before_it():
    from breast_cancer_pipeline.training.checkpoints import RunRecord

    record = RunRecord("abc", phase="phase1", epochs=[_epoch(0.6), _epoch(0.7)])
    record.complete("phase1")
    record.phase, record.epochs = "phase2", [_epoch(0.8)]
    assert record.epochs_of("phase1") == [] and len(record.epochs_of("phase2")) == 1
    record.complete("phase2")
    assert record.completed == ["phase1", "phase2"]
    assert record.histories["phase1"] == {"val_auc": [0.6, 0.7], "epoch": [0, 1]}
    assert record.histories["phase2"] == {"val_auc": [0.8], "epoch": [2]}
    assert record.steps_done == 3
    state = record.to_state()
    assert state["epochs_done"] == 0 and RunRecord.from_state(state) == record


def test_resume_record_continues_a_matching_checkpoint_cut_back_to_keras_backup(tmp_path):
    from breast_cancer_pipeline.training.checkpoints import RunRecord, resume_record

    store = CheckpointDirectory(tmp_path / "ckpt")
    _interrupted_fit(store, epochs_done=2)  # Keras backed up two epochs of phase1
    killed = RunRecord("abc", phase="phase1", epochs=[_epoch(0.6), _epoch(0.7), _epoch(0.8)])
    store.write_state(killed.to_state())  # the record is one epoch ahead of the backup
    record = resume_record(store, "abc", resume=True)
    assert record.phase == "phase1" and [e["best"] for e in record.epochs] == [0.6, 0.7]
    with pytest.raises(ValueError, match="other parameters, backbone or data"):
        resume_record(store, "other settings", resume=True)
    assert resume_record(store, "abc", resume=False) == RunRecord("abc")
    assert not store.path.exists()  # without resume the checkpoint is deleted
    assert resume_record(store, "abc", resume=True) == RunRecord("abc")  # nothing to resume
