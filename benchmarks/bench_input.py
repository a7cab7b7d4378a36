"""``input.*``: can the input pipeline keep the model fed?

Images per second the ``tf.data`` pipeline delivers from memory-mapped arrays with the
augmentation layers applied (what the model sees in training) over images per second the
demo model (small CNN, 128 px) trains; also over a MobileNetV2 at the same size, and the
pipeline's rate without augmentation. Goal: ≥ 20, so the input is never the bottleneck.
Measured in three interleaved rounds (input, small CNN, MobileNetV2, input, ...), after one
warm-up each; each ratio is its round's, the figure their median.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks._images import AUGMENTATION, model_input
from tests.params import base_params

#: Images per training batch, as finetune trains (conf/base).
BATCH = base_params("finetune")["batch_size"]
GOALS: dict[str, harness.Goal] = {"input.throughput_ratio": (">=", 20)}


def _input_rate(dataset: Any, n: int, epochs: int) -> float:
    """Images per second ``dataset`` delivers over ``epochs`` passes."""
    started = time.perf_counter()
    for _ in range(epochs):
        for _ in dataset:
            pass
    return epochs * n / (time.perf_counter() - started)


def _trainer(backbone: str, x: np.ndarray, y: np.ndarray, epochs: int) -> Any:
    """A warmed-up model's ``() -> training images per second`` over ``epochs`` epochs."""
    import keras

    from breast_cancer_pipeline.modeling import build_classifier

    model = build_classifier(backbone, 3, x.shape[1], 1, None, {"dropout": 0.2}, AUGMENTATION)
    model.get_layer("backbone").trainable = True  # as in fine-tuning's phase 2
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    y_hot = np.eye(3, dtype=np.float32)[y]
    model.fit(x, y_hot, batch_size=BATCH, epochs=1, verbose=0)  # warm-up: tracing

    def rate() -> float:
        started = time.perf_counter()
        model.fit(x, y_hot, batch_size=BATCH, epochs=epochs, verbose=0)
        return epochs * len(y) / (time.perf_counter() - started)

    return rate


def run(workdir: Path) -> dict[str, Any]:
    import tensorflow as tf

    from breast_cancer_pipeline.modeling import build_augmenter, set_seed
    from breast_cancer_pipeline.training.data import make_dataset

    set_seed(0)
    data = model_input(workdir)
    x, y = data["x_train"], np.asarray(data["y_train"])
    n = len(y)
    dataset, _ = make_dataset(x, y, 3, BATCH, training=True, seed=0)
    augmenter = build_augmenter(AUGMENTATION, seed=0)
    augmented = dataset.map(
        lambda images, labels: (augmenter(tf.cast(images, tf.float32), training=True), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)
    for pipeline in (dataset, augmented):
        _input_rate(pipeline, n, 1)  # warm-up: tracing
    x_mem = np.asarray(x)
    quick = harness.quick()
    rates = harness.interleave(
        {
            "plain": lambda: _input_rate(dataset, n, 2 if quick else 10),
            "augmented": lambda: _input_rate(augmented, n, 1 if quick else 5),
            "small_cnn": _trainer("small_cnn", x_mem, y, 1 if quick else 2),
            "mobilenet_v2": _trainer("mobilenet_v2", x_mem, y, 1),
        }
    )
    return {
        "input.images_per_second_plain": harness.summary(rates["plain"], 1),
        "input.images_per_second_augmented": harness.summary(rates["augmented"], 1),
        "input.model_train_images_per_second": harness.summary(rates["small_cnn"], 1),
        "input.throughput_ratio": harness.summary(
            harness.ratios(rates["augmented"], rates["small_cnn"]), 2
        ),
        "input.mobilenet_v2_train_images_per_second": harness.summary(rates["mobilenet_v2"], 1),
        "input.throughput_ratio_mobilenet_v2": harness.summary(
            harness.ratios(rates["augmented"], rates["mobilenet_v2"]), 2
        ),
        "input.model": f"small_cnn {x.shape[1]} px grayscale, batch {BATCH}, base trainable",
    }
