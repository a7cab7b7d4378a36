"""The shared training machinery: input pipeline, class weights, strategies, checkpoints."""

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from breast_cancer_pipeline.datasets.training_checkpoints import CheckpointDirectory
from breast_cancer_pipeline.pipelines.finetune.nodes import HEAD_KEYS
from breast_cancer_pipeline.training import (
    make_dataset,
    make_strategy,
    resolve_class_weights,
)
from tests.pipelines.finetune.helpers import AUGMENTATION, BEST_HEAD, subprocess_env

CLASSES = ["benign", "malignant", "normal"]


def _arrays(tmp_path, n=20):
    """Images whose every pixel holds the image's index, memory-mapped like model_input."""
    x = np.repeat(np.arange(n, dtype=np.uint8), 4 * 4).reshape(n, 4, 4, 1)
    np.save(tmp_path / "x.npy", x)
    y = np.array([0] * 14 + [1] * 4 + [2] * 2)
    return np.load(tmp_path / "x.npy", mmap_mode="r"), y


def test_validation_batches_keep_order_and_pair_images_with_labels(tmp_path):
    x, y = _arrays(tmp_path)
    dataset, steps = make_dataset(x, y, 3, 8, training=False, seed=0)
    batches = list(dataset.as_numpy_iterator())
    assert steps == 3
    assert [len(b[0]) for b in batches] == [8, 8, 4]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images[:, 0, 0, 0], np.arange(20))
    np.testing.assert_array_equal(labels.argmax(axis=1), y)


def test_training_batches_are_shuffled_each_epoch_and_reproducible(tmp_path):
    x, y = _arrays(tmp_path)

    def epochs(seed):
        dataset, _ = make_dataset(x, y, 3, 8, training=True, seed=seed)
        out = []
        for _ in range(2):
            batches = list(dataset.as_numpy_iterator())
            ids = np.concatenate([b[0][:, 0, 0, 0] for b in batches])
            labels = np.concatenate([b[1].argmax(axis=1) for b in batches])
            np.testing.assert_array_equal(labels, y[ids])  # images and labels stay paired
            out.append(ids)
        return out

    first, second = epochs(3)
    assert sorted(first) == list(range(20))  # every image once per epoch
    assert not np.array_equal(first, second)  # reshuffled
    np.testing.assert_array_equal(epochs(3)[0], first)  # seeded


def test_oversampling_balances_the_classes(tmp_path):
    x, y = _arrays(tmp_path)
    dataset, steps = make_dataset(x, y, 3, 10, training=True, seed=0, oversample=True)
    labels = np.concatenate(
        [b[1].argmax(axis=1) for b in dataset.take(steps * 300).as_numpy_iterator()]
    )
    share = np.bincount(labels, minlength=3) / len(labels)
    # 6,000 draws: a share's standard error is 0.006, so 0.03 is five of them.
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.03)  # not 0.70 / 0.20 / 0.10
    plain, _ = make_dataset(x, y, 3, 10, training=True, seed=0)
    labels = np.concatenate([b[1].argmax(axis=1) for b in plain.as_numpy_iterator()])
    np.testing.assert_array_equal(np.bincount(labels), [14, 4, 2])


def test_make_dataset_refuses_mismatched_inputs(tmp_path):
    x, y = _arrays(tmp_path)
    with pytest.raises(ValueError, match="20 images but 19 labels"):
        make_dataset(x, y[:-1], 3, 8, training=False, seed=0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        make_dataset(x, y, 2, 8, training=False, seed=0)


def test_class_weights_auto_none_and_explicit():
    y = np.array([0] * 6 + [1] * 3 + [2] * 3)
    assert resolve_class_weights("auto", y, CLASSES, False) == pytest.approx(
        {0: 12 / 18, 1: 12 / 9, 2: 12 / 9}
    )
    # A class absent from the training labels keeps weight 1 (no division by zero).
    assert resolve_class_weights("auto", np.array([0, 0, 1]), CLASSES, False) == pytest.approx(
        {0: 3 / 6, 1: 3 / 3, 2: 1.0}
    )
    assert resolve_class_weights("none", y, CLASSES, False) is None
    assert resolve_class_weights("auto", y, CLASSES, True) is None  # batches already balanced
    assert resolve_class_weights({"malignant": 3.0}, y, CLASSES, False) == {0: 1.0, 1: 3.0, 2: 1.0}
    assert resolve_class_weights([1, 2, 0.5], y, CLASSES, False) == {0: 1.0, 1: 2.0, 2: 0.5}
    with pytest.raises(ValueError, match=r"unknown classes \['cancer'\]"):
        resolve_class_weights({"cancer": 2.0}, y, CLASSES, False)
    with pytest.raises(ValueError, match="2 weights for 3 classes"):
        resolve_class_weights([1, 2], y, CLASSES, False)
    with pytest.raises(ValueError, match="must be auto, none"):
        resolve_class_weights("balanced", y, CLASSES, False)


def test_strategy_names(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert make_strategy("none") is tf.distribute.get_strategy()
    assert make_strategy("auto") is tf.distribute.get_strategy()  # one CPU, no cluster
    with pytest.raises(ValueError, match="must be one of"):
        make_strategy("tpu")
    with pytest.raises(ValueError, match="needs the TF_CONFIG"):
        make_strategy("multi_worker")


def test_checkpoint_writes_are_atomic(tmp_path):
    """A write killed half-way leaves the previous checkpoint intact and loadable."""
    import keras

    store = CheckpointDirectory(tmp_path / "ckpt")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert not store.restore_best(model)  # nothing saved yet
    store.save_best(model)
    saved = [w.copy() for w in model.get_weights()]

    class Dying:
        def save_weights(self, path):
            Path(path).write_bytes(b"half an HDF5 file")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.save_best(Dying())
    assert [p.name for p in store.path.iterdir()] == ["best.weights.h5"]  # no temporaries
    model.set_weights([np.zeros_like(w) for w in saved])
    assert store.restore_best(model)
    for a, b in zip(model.get_weights(), saved, strict=True):
        np.testing.assert_array_equal(a, b)
    store.write_state({"epochs_done": 3})
    assert store.read_state() == {"epochs_done": 3}
    store.discard()
    assert store.read_state() is None
    assert not store.path.exists()


def _interrupted_fit(store, epochs_done, epochs=5):
    """A model trained ``epochs_done`` epochs of ``epochs`` under PhaseBackup, then killed."""
    import keras

    from breast_cancer_pipeline.training import PhaseBackup

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


_WORKER = textwrap.dedent(
    """
    import logging, sys
    import numpy as np
    from breast_cancer_pipeline import progress
    from tests.pipelines.finetune.helpers import model_input, run_finetune

    logging.basicConfig(level=logging.INFO, force=True)
    progress.add_listener(lambda metrics, step: print("PUBLISHED", step, flush=True))
    model, metadata, *_ = run_finetune(
        sys.argv[2], model_input(n=32), seed=3, deterministic=True, strategy="multi_worker",
        phase1={"learning_rate": 0.01}, phase2={"epochs": 0},
    )
    assert metadata["replicas"] == 2, metadata
    np.savez(sys.argv[1], *model.get_weights())
    """
)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_train_one_epoch_to_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
    procs = []
    for index in range(2):
        env = subprocess_env(
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    str(tmp_path / f"w{index}.npz"),
                    str(tmp_path / "ckpt"),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    # One epoch, published by the chief (worker 0) only, and every worker logs its progress.
    assert [line for line in outputs[0].splitlines() if line.startswith("PUBLISHED")] == [
        "PUBLISHED 0"
    ]
    assert "PUBLISHED" not in outputs[1]
    assert all("phase1 epoch 1/1" in out for out in outputs)
    first, second = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(first.files) > 4
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key])

    # From their (seeded, shared) initialisation, phase 1 moved the head and only the head.
    import keras

    from breast_cancer_pipeline.modeling import build_classifier

    keras.utils.set_random_seed(3)
    initial = build_classifier(
        "small_cnn", 2, 16, 1, None, {k: BEST_HEAD[k] for k in HEAD_KEYS}, AUGMENTATION, seed=3
    ).get_weights()
    trained = [first[f"arr_{i}"] for i in range(len(initial))]
    for before, after in zip(initial[:-2], trained[:-2], strict=True):
        np.testing.assert_array_equal(before, after)  # the frozen base
    assert not np.allclose(initial[-2], trained[-2])  # the head's kernel


def test_random_affine_is_one_resampling_of_the_configured_ranges(tmp_path):
    """The fused augmentation: identity in inference, the ranges it is given, and it saves."""
    import keras

    from breast_cancer_pipeline.modeling import RandomAffine, build_augmenter, build_classifier

    image = np.zeros((1, 33, 33, 1), np.float32)
    image[0, 16, 24] = 255.0  # one bright pixel, 8 px right of the centre
    batch = np.repeat(image, 64, axis=0)
    np.testing.assert_array_equal(RandomAffine(0.25, seed=1)(batch, training=False), batch)
    np.testing.assert_array_equal(RandomAffine(seed=1)(batch, training=True), batch)

    def bright_spot(layer):
        out = np.asarray(layer(batch, training=True))[..., 0]
        rows, cols = np.unravel_index(out.reshape(len(out), -1).argmax(axis=1), out.shape[1:])
        return rows - 16, cols - 16

    dy, dx = bright_spot(RandomAffine(translation=0.2, seed=1))  # ±6.6 px
    assert np.abs(dx - 8).max() <= 7 and np.abs(dy).max() <= 7 and dx.std() > 1
    dy, dx = bright_spot(RandomAffine(rotation=0.25, seed=1))  # ±90°: stays 8 px away
    np.testing.assert_allclose(np.hypot(dy, dx), 8, atol=1.5)
    assert (dy < -2).any() and (dy > 2).any()  # turned both ways

    layers = [
        type(layer).__name__
        for layer in build_augmenter(
            {"flip": "horizontal", "rotation": 0.1, "zoom": 0.1, "contrast": 0.1}
        ).layers
    ]
    assert layers == ["RandomFlip", "RandomAffine", "RandomContrast"]
    model = build_classifier(
        "small_cnn", 2, 16, 1, None, {}, {"rotation": 0.1, "zoom": 0.1, "translation": 0.1}
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    affine = loaded.get_layer("augmentation").get_layer("random_affine")
    assert (affine.rotation, affine.zoom, affine.translation) == (0.1, 0.1, 0.1)
