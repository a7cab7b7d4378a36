import json
import logging
import re

import numpy as np
import pytest

from breast_cancer_pipeline import progress
from breast_cancer_pipeline.datasets.training_checkpoints import CheckpointDirectory
from breast_cancer_pipeline.training.phases import build_callbacks
from tests.pipelines.finetune.helpers import model_input, run_finetune

EPOCH_LINE = re.compile(
    r"(phase[12]) epoch (\d+)/(\d+): .*val_auc [\d.]+.* \((\d+) s, ETA of the phase (\d+) s\)"
)
KEYS = {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc", "learning_rate"}


@pytest.fixture
def published():
    """Every (step, metrics) that finetune publishes while it runs."""
    received = []

    def listener(metrics, step):
        received.append((step, dict(metrics)))

    progress.add_listener(listener)
    yield received
    progress.remove_listener(listener)


def test_two_phases_history_metadata_and_progress(tmp_path, caplog, published):
    caplog.set_level(logging.INFO, logger="breast_cancer_pipeline.training")
    model, metadata, history, same = run_finetune(tmp_path / "ckpt")
    assert same is model
    assert model.output_shape == (None, 2)
    assert metadata["class_names"] == ["benign", "malignant"]
    assert (metadata["image_size"], metadata["channels"]) == (16, 1)
    # Arrays made before resize modes existed were stretched; the served model says so.
    assert (metadata["resize"], metadata["crop_margin"]) == ("stretch", 0.0)
    # The head search's head and phase-1 learning rate; finetune.batch_size wins over its 16.
    assert metadata["head"] == {"dropout": 0.1, "dense_units": None}
    assert metadata["batch_size"] == 8
    assert (metadata["epochs"], metadata["strategy"]) == (3, "_DefaultDistributionStrategy")
    assert "train_seconds" not in metadata  # identical runs write identical metadata
    assert history["phase1"]["epoch"] == [0]
    assert history["phase2"]["epoch"] == [1, 2]
    assert history["phase1"]["learning_rate"] == [pytest.approx(0.01)]
    assert history["phase2"]["learning_rate"] == [pytest.approx(0.001)] * 2
    assert all(layer.trainable for layer in model.get_layer("backbone").layers)
    # One line per epoch, with its phase, i/n, metrics, seconds and the phase's ETA.
    lines = [m.groups() for m in EPOCH_LINE.finditer(caplog.text)]
    assert [line[:3] for line in lines] == [
        ("phase1", "1", "1"),
        ("phase2", "1", "2"),
        ("phase2", "2", "2"),
    ]
    assert [line[4] for line in lines][-1] == "0"  # nothing left at the last epoch
    # Each epoch's metrics are published as it ends, stepped by the epoch of both phases.
    assert [step for step, _ in published] == [0, 1, 2]
    assert all(set(m) == {f"finetune.{k}" for k in KEYS} for _, m in published)
    val_auc = history["phase1"]["val_auc"] + history["phase2"]["val_auc"]
    assert [m["finetune.val_auc"] for _, m in published] == val_auc
    # A completed run leaves no checkpoint behind.
    assert not (tmp_path / "ckpt").exists()


class _Killed(Exception):
    """Stands for the process being killed."""


@pytest.mark.parametrize(
    ("before_backup", "resumed_at"),
    [
        (False, 3),  # killed after the epoch was backed up
        (True, 2),  # killed between the record and Keras's backup: the record is cut back
    ],
)
def test_a_killed_run_resumes_from_its_last_checkpoint(
    tmp_path, monkeypatch, caplog, published, before_backup, resumed_at
):
    import keras

    class KillAt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise _Killed

    def with_kill(plan, phase, *args):
        callbacks = build_callbacks(plan, phase, *args)
        if phase.name == "phase2":
            callbacks.insert(3 if before_backup else len(callbacks), KillAt())
        return callbacks

    monkeypatch.setattr("breast_cancer_pipeline.training.phases.build_callbacks", with_kill)
    params = {"phase2": {"epochs": 3}, "resume": True}
    with pytest.raises(_Killed):
        run_finetune(tmp_path / "ckpt", **params)
    # Killed in phase 2's second epoch: phase 1 is complete, phase 2 has two epochs recorded.
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert (state["phase"], state["completed"], state["epochs_done"]) == ("phase2", ["phase1"], 2)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "backup_phase2",
        "best.weights.h5",
        "phase1_end.weights.h5",
        "state.json",
    ]
    backup = json.loads((tmp_path / "ckpt/backup_phase2/training_metadata.json").read_text())
    assert backup["epoch"] == (1 if before_backup else 2)

    monkeypatch.setattr("breast_cancer_pipeline.training.phases.build_callbacks", build_callbacks)
    published.clear()
    caplog.clear()
    caplog.set_level(logging.INFO)
    model, metadata, history, _ = run_finetune(tmp_path / "ckpt", **params)
    assert f"Resuming phase2 at epoch {resumed_at}" in caplog.text
    assert "phase1 epoch" not in caplog.text  # phase 1 was not trained again
    trained = [int(m.group(2)) for m in EPOCH_LINE.finditer(caplog.text)]
    assert trained == list(range(resumed_at, 4))
    assert history["phase1"]["epoch"] == [0]
    assert history["phase2"]["epoch"] == [1, 2, 3]  # the killed run's epochs are kept
    assert metadata["epochs"] == 4
    # The resumed run publishes the restored epochs too: its MLflow run has whole curves.
    assert [step for step, _ in published] == [0, 1, 2, 3]
    assert not (tmp_path / "ckpt").exists()


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    store = CheckpointDirectory(tmp_path / "ckpt")
    store.write_state({"fingerprint": "other", "phase": "phase1", "completed": []})
    with pytest.raises(ValueError, match=r"resume: false"):
        run_finetune(tmp_path / "ckpt", resume=True)
    # Without resume the stale checkpoint is deleted and training starts over.
    run_finetune(tmp_path / "ckpt", resume=False, phase2={"epochs": 0})
    assert not (tmp_path / "ckpt").exists()


def test_deterministic_reruns_give_identical_weights_and_test_metrics(tmp_path):
    from breast_cancer_pipeline.evaluation.predictions import prediction_frame
    from breast_cancer_pipeline.metrics import auroc

    models, frames = [], []
    for run in range(2):
        model, *_ = run_finetune(tmp_path / str(run), deterministic=True, oversample=True)
        models.append(model)
        proba = model.predict(model_input()["x_test"], batch_size=4, verbose=0)
        frames.append(prediction_frame(model_input(), "test", proba))
    for a, b in zip(models[0].get_weights(), models[1].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(frames[0].to_numpy(), frames[1].to_numpy())
    y = (frames[0]["label"] == "malignant").to_numpy().astype(int)
    # Trained, not constant: the bright square of class 1 is learnt.
    assert auroc(y, frames[0][["p_benign", "p_malignant"]].to_numpy()) > 0.9
