import json
import logging

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.datasets.training_checkpoints import CheckpointDirectory
from breast_cancer_pipeline.pipelines.finetune import nodes
from breast_cancer_pipeline.pipelines.finetune.nodes import check_params, finetune_classifier

PARAMS = {
    "seed": 1,
    "deterministic": False,
    "strategy": "none",
    "resume": False,
    "batch_size": 8,
    "class_weight": "auto",
    "oversample": False,
    "head": {},
    "early_stopping_patience": 5,
    "reduce_lr": {"factor": 0.5, "patience": 3, "min_lr": 1e-6},
    "phase1": {"epochs": 1, "learning_rate": None},
    "phase2": {"epochs": 2, "learning_rate": 0.001, "unfreeze": {"fraction": 1.0}},
}
SELECTED = {"backbone": "small_cnn", "weights": None, "head": {"dropout": 0.1}}
BEST_HEAD = {"dropout": 0.1, "dense_units": None, "learning_rate": 0.01, "batch_size": 16}


def _model_input(n=24, size=16):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = rng.integers(0, 60, (n, size, size, 1)).astype(np.uint8)
    x[y == 1, 4:12, 4:12] = 220  # a bright square marks class 1
    return {
        "x_train": x,
        "y_train": y,
        "x_val": x[:8],
        "y_val": y[:8],
        "x_test": x[8:16],
        "y_test": y[8:16],
        "paths_test": np.array([f"t{i}.png" for i in range(8)]),
        "class_names": np.array(["benign", "malignant"]),
    }


def _run(tmp_path, **overrides):
    params = {**PARAMS, **overrides}
    return finetune_classifier(
        _model_input(),
        SELECTED,
        BEST_HEAD,
        {"flip": "horizontal"},
        CheckpointDirectory(tmp_path / "ckpt"),
        params,
    )


def test_two_phases_history_metadata_and_progress(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="breast_cancer_pipeline.training")
    model, metadata, history, mlflow_history, same = _run(tmp_path)
    assert same is model
    assert model.output_shape == (None, 2)
    assert metadata["class_names"] == ["benign", "malignant"]
    assert (metadata["image_size"], metadata["channels"]) == (16, 1)
    # The head search's configuration: learning rate of phase 1 and dropout.
    assert metadata["head"] == {"dropout": 0.1, "dense_units": None}
    assert metadata["batch_size"] == 8
    assert history["phase1"]["epoch"] == [0]
    assert history["phase2"]["epoch"] == [1, 2]
    assert history["phase1"]["learning_rate"] == [pytest.approx(0.01)]
    assert [p["step"] for p in mlflow_history["finetune.loss"]] == [0, 1, 2]
    assert all(layer.trainable for layer in model.get_layer("backbone").layers)
    # Progress is logged epoch by epoch, and a completed run leaves no checkpoint behind.
    assert "phase2 epoch 2/2" in caplog.text
    assert not (tmp_path / "ckpt").exists()


class _Killed(Exception):
    """Stands for the process being killed."""


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch, caplog):
    import keras

    class KillAt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if self.phase == "phase2" and epoch == 1:
                raise _Killed

    make_callbacks = nodes._callbacks

    def with_kill(params, phase, epochs):
        killer = KillAt()
        killer.phase = phase
        return [*make_callbacks(params, phase, epochs), killer]

    monkeypatch.setattr(nodes, "_callbacks", with_kill)
    params = {"phase2": {**PARAMS["phase2"], "epochs": 3}, "resume": True}
    with pytest.raises(_Killed):
        _run(tmp_path, **params)
    # Killed in phase 2's second epoch: phase 1 is complete, phase 2 has one epoch saved.
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert (state["phase"], state["completed"], state["epochs_done"]) == ("phase2", ["phase1"], 1)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "best.weights.h5",
        "last.weights.h5",
        "phase1_end.weights.h5",
        "state.json",
    ]

    monkeypatch.setattr(nodes, "_callbacks", make_callbacks)
    caplog.set_level(logging.INFO)
    model, metadata, history, _, _ = _run(tmp_path, **params)
    assert "Resuming phase2 at epoch 2" in caplog.text
    assert "phase1 epoch" not in caplog.text  # phase 1 was not trained again
    assert "phase2 epoch 1/3" not in caplog.text
    assert "phase2 epoch 3/3" in caplog.text
    assert history["phase1"]["epoch"] == [0]
    assert history["phase2"]["epoch"] == [1, 2, 3]  # the killed run's epoch is kept
    assert metadata["epochs"] == 4
    assert not (tmp_path / "ckpt").exists()


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    store = CheckpointDirectory(tmp_path / "ckpt")
    store.write_state({"fingerprint": "other", "phase": "phase1", "completed": []})
    with pytest.raises(ValueError, match=r"resume: false"):
        _run(tmp_path, resume=True)
    # Without resume the stale checkpoint is deleted and training starts over.
    _run(tmp_path, resume=False, phase2={**PARAMS["phase2"], "epochs": 0})
    assert not (tmp_path / "ckpt").exists()


def test_deterministic_reruns_give_identical_test_metrics(tmp_path):
    from breast_cancer_pipeline.pipelines.backbone_selection.nodes import auroc
    from breast_cancer_pipeline.pipelines.reporting.nodes import predict_test_split

    frames = []
    for run in range(2):
        model, *_ = _run(tmp_path / str(run), deterministic=True, oversample=True)
        frames.append(predict_test_split(model, _model_input(), {"batch_size": 4}))
    pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=True)
    y = (frames[0]["label"] == "malignant").to_numpy().astype(int)
    proba = frames[0][["p_benign", "p_malignant"]].to_numpy()
    assert auroc(y, proba) == auroc(y, frames[1][["p_benign", "p_malignant"]].to_numpy())
    # Trained, not constant: the bright square is learnt.
    assert proba[:, 1].std() > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"strategy": "tpu"}, "finetune.strategy"),
        ({"batch_size": 0}, "finetune.batch_size"),
        ({"phase1": {"epochs": -1}}, "finetune.phase1.epochs"),
        (
            {"phase2": {"epochs": 2, "unfreeze": {"from_layer": 3, "fraction": 0.5}}},
            "exactly one",
        ),
        ({"reduce_lr": {"factor": 2.0}}, "reduce_lr.factor"),
    ],
)
def test_bad_parameters_fail_before_training(override, message):
    with pytest.raises(ValueError, match=message):
        check_params({**PARAMS, **override})


def test_unfreeze_keeps_pretrained_batchnorm_frozen():
    from keras import layers

    from breast_cancer_pipeline.modeling import build_classifier, unfreeze

    model = build_classifier("mobilenet_v2", 2, 32, 3, None, {})
    base = model.get_layer("backbone")
    n = unfreeze(model, fraction=0.5, keep_batchnorm_frozen=True)
    trainable = [layer for layer in base.layers if layer.trainable]
    assert n == len(trainable) > 0
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in trainable)
    assert not any(layer.trainable for layer in base.layers[: len(base.layers) // 2])
    with pytest.raises(ValueError, match="exactly one"):
        unfreeze(model)
