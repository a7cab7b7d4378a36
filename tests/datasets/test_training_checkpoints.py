"""The checkpoint folder of a training run (its handle writes atomically)."""

from pathlib import Path

import numpy as np
import pytest

from breast_cancer_pipeline.datasets.training_checkpoints import CheckpointDirectory


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
