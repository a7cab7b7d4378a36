"""``finetune.fit_efficiency``: what the pipeline's training loop costs over a bare ``fit``.

The same model (the demo's small CNN, 128 px, augmentation inside, all layers trainable)
trained one way as finetune trains it (``tf.data`` from memory-mapped arrays, class weights,
and the callbacks finetune builds: early stopping, learning-rate reduction, the per-epoch
record and best weights, Keras's BackupAndRestore, the progress log), the other way by a
bare ``model.fit`` on in-memory arrays; both validate every epoch.
Images per second of training, measured on epochs after the first (tracing), in three
interleaved rounds (pipeline, bare, pipeline, bare, ...); the ratio is each round's, its median
the figure. Goal ≥ 0.9.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks._images import AUGMENTATION, model_input

BATCH = 32
EPOCHS = 2 if harness.quick() else 4  # the first one (tracing) is not timed
GOALS: dict[str, harness.Goal] = {"finetune.fit_efficiency": (">=", 0.9)}
HEAD = {"dropout": 0.2, "dense_units": None}
PARAMS_FILE = Path(__file__).resolve().parents[1] / "conf" / "base" / "parameters_finetune.yml"


def run(workdir: Path) -> dict[str, Any]:
    data = model_input(workdir)
    rates = harness.interleave(
        {
            "pipeline": lambda: _pipeline_rate(data, workdir / "checkpoints"),
            "bare": lambda: _bare_rate(data),
        }
    )
    size = data["x_train"].shape[1]
    return {
        "finetune.pipeline_images_per_second": harness.summary(rates["pipeline"], 1),
        "finetune.bare_fit_images_per_second": harness.summary(rates["bare"], 1),
        "finetune.fit_efficiency": harness.summary(
            harness.ratios(rates["pipeline"], rates["bare"])
        ),
        "finetune.model": f"small_cnn {size} px grayscale, batch {BATCH}, all layers trainable",
        "finetune.timed_epochs": EPOCHS - 1,
    }


def _pipeline_rate(data: dict[str, np.ndarray], checkpoint_dir: Path) -> float:
    """Training images per second as finetune trains: tf.data, class weights, its callbacks."""
    import yaml

    from breast_cancer_pipeline.datasets.training_checkpoints import CheckpointDirectory
    from breast_cancer_pipeline.training.callbacks import build_callbacks
    from breast_cancer_pipeline.training.checkpoints import RunRecord
    from breast_cancer_pipeline.training.data import make_dataset, resolve_class_weights
    from breast_cancer_pipeline.training.plan import FinetunePlan

    # conf/base's finetune, with patience enough that no callback ends or slows the run.
    params = yaml.safe_load(PARAMS_FILE.read_text())["finetune"]
    params["early_stopping_patience"] = params["reduce_lr"]["patience"] = 100
    params["phase2"]["epochs"] = EPOCHS
    plan = FinetunePlan.from_params(params, {**HEAD, "learning_rate": 1e-3, "batch_size": BATCH})
    y = np.asarray(data["y_train"])
    train, steps = make_dataset(data["x_train"], y, 3, BATCH, training=True, seed=0)
    val, _ = make_dataset(data["x_val"], data["y_val"], 3, BATCH, training=False, seed=0)
    store = CheckpointDirectory(checkpoint_dir)
    timer = _epoch_timer()
    _model(data).fit(
        train,
        steps_per_epoch=steps,
        validation_data=val,
        epochs=EPOCHS,
        class_weight=resolve_class_weights("auto", y, list(data["class_names"]), False),
        shuffle=False,
        callbacks=[
            *build_callbacks(plan, plan.phase2, store, RunRecord("bench"), publish=False),
            timer,
        ],
        verbose=0,
    )
    store.discard()
    return len(y) * (EPOCHS - 1) / sum(timer.seconds[1:])


def _bare_rate(data: dict[str, np.ndarray]) -> float:
    """Training images per second of a bare ``model.fit`` on in-memory arrays."""
    eye = np.eye(3, dtype=np.float32)
    y = np.asarray(data["y_train"])
    timer = _epoch_timer()
    _model(data).fit(
        np.asarray(data["x_train"]),
        eye[y],
        batch_size=BATCH,
        validation_data=(np.asarray(data["x_val"]), eye[np.asarray(data["y_val"])]),
        epochs=EPOCHS,
        callbacks=[timer],
        verbose=0,
    )
    return len(y) * (EPOCHS - 1) / sum(timer.seconds[1:])


def _model(data: dict[str, np.ndarray]) -> Any:
    from breast_cancer_pipeline.modeling import build_classifier, set_seed
    from breast_cancer_pipeline.training.phases import compile_classifier

    set_seed(0)
    size = data["x_train"].shape[1]
    model = build_classifier("small_cnn", 3, size, 1, None, HEAD, AUGMENTATION)
    model.get_layer("backbone").trainable = True
    compile_classifier(model, 1e-3, 3, "auto")
    return model


def _epoch_timer() -> Any:
    """A Keras callback that records each epoch's seconds in ``.seconds``."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.seconds.append(time.perf_counter() - self._started)

    return EpochTimer()
