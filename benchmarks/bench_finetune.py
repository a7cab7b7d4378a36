"""``finetune.fit_efficiency``: what the pipeline's training loop costs over a bare ``fit``.

The same model (the demo's small CNN, 128 px, augmentation inside, all layers trainable)
trained one way as finetune trains it (``tf.data`` from memory-mapped arrays, class weights,
early stopping, learning-rate reduction, the atomic per-epoch checkpoint and the progress
log), the other way by a bare ``model.fit`` on in-memory arrays; both validate every epoch.
Images per second of training, measured on epochs after the first (tracing). Goal ≥ 0.9.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._images import AUGMENTATION, model_input

BATCH = 32
EPOCHS = 4  # the first one (tracing) is not timed


def run(workdir: Path) -> dict[str, Any]:
    import keras

    from breast_cancer_pipeline.datasets.training_checkpoints import CheckpointDirectory
    from breast_cancer_pipeline.modeling import build_classifier, set_seed
    from breast_cancer_pipeline.pipelines.finetune.nodes import _callbacks, _compile
    from breast_cancer_pipeline.training import (
        EpochLogger,
        ResumableCheckpoint,
        make_dataset,
        resolve_class_weights,
    )

    data = model_input(workdir)
    x, y = data["x_train"], np.asarray(data["y_train"])
    x_val, y_val = data["x_val"], np.asarray(data["y_val"])
    n = len(y)

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.seconds.append(time.perf_counter() - self._t)

    def model() -> Any:
        set_seed(0)
        m = build_classifier("small_cnn", 3, x.shape[1], 1, None, {"dropout": 0.2}, AUGMENTATION)
        m.get_layer("backbone").trainable = True
        _compile(m, 1e-3, 3)
        return m

    params = {
        "early_stopping_patience": 100,
        "reduce_lr": {"factor": 0.5, "patience": 100, "min_lr": 1e-6},
    }
    rates: dict[str, list[float]] = {"pipeline": [], "bare": []}
    for _ in range(2):  # alternate, so that load changes hit both alike
        timer = EpochTimer()
        train, steps = make_dataset(x, y, 3, BATCH, training=True, seed=0)
        val, _ = make_dataset(x_val, y_val, 3, BATCH, training=False, seed=0)
        callbacks = _callbacks(params, "phase2", EPOCHS)
        store = CheckpointDirectory(workdir / "checkpoints")
        checkpoint = ResumableCheckpoint(store, "phase2", {}, stateful=callbacks)
        model().fit(
            train,
            steps_per_epoch=steps,
            validation_data=val,
            epochs=EPOCHS,
            class_weight=resolve_class_weights("auto", y, list(data["class_names"])),
            shuffle=False,
            callbacks=[*callbacks, checkpoint, EpochLogger("bench", EPOCHS), timer],
            verbose=0,
        )
        rates["pipeline"].append(n * (EPOCHS - 1) / sum(timer.seconds[1:]))
        store.clear()

        timer = EpochTimer()
        eye = np.eye(3, dtype=np.float32)
        model().fit(
            np.asarray(x),
            eye[y],
            batch_size=BATCH,
            validation_data=(np.asarray(x_val), eye[y_val]),
            epochs=EPOCHS,
            callbacks=[timer],
            verbose=0,
        )
        rates["bare"].append(n * (EPOCHS - 1) / sum(timer.seconds[1:]))
    pipeline, bare = max(rates["pipeline"]), max(rates["bare"])
    return {
        "finetune.pipeline_images_per_second": round(pipeline, 1),
        "finetune.bare_fit_images_per_second": round(bare, 1),
        "finetune.fit_efficiency": round(pipeline / bare, 3),
        "finetune.model": "small_cnn 128 px grayscale, batch 32, all layers trainable",
    }
