"""``input.*``: can the input pipeline keep the model fed?

Images per second the ``tf.data`` pipeline delivers from memory-mapped arrays with the
augmentation layers applied (what the model sees in training) over images per second the
demo model (small CNN, 128 px) trains; also over a MobileNetV2 at the same size, and the
pipeline's rate without augmentation. Goal: ≥ 20, so the input is never the bottleneck.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._images import AUGMENTATION, model_input
from tests.params import base_params

#: Images per training batch, as finetune trains (conf/base).
BATCH = base_params("finetune")["batch_size"]


def run(workdir: Path) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from breast_cancer_pipeline.modeling import build_augmenter, build_classifier, set_seed
    from breast_cancer_pipeline.training import make_dataset

    set_seed(0)
    data = model_input(workdir)
    x, y = data["x_train"], data["y_train"]
    n = len(y)

    dataset, _ = make_dataset(x, y, 3, BATCH, training=True, seed=0)
    augmenter = build_augmenter(AUGMENTATION, seed=0)
    augmented = dataset.map(
        lambda images, labels: (augmenter(tf.cast(images, tf.float32), training=True), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)

    def rate(data: Any, epochs: int) -> float:
        for _ in data:  # warm-up: tracing
            pass
        started = time.perf_counter()
        for _ in range(epochs):
            for _ in data:
                pass
        return epochs * n / (time.perf_counter() - started)

    plain_rate = rate(dataset, 10)
    input_rate = rate(augmented, 5)

    x_mem, y_hot = np.asarray(x), np.eye(3, dtype=np.float32)[y]

    def train_rate(backbone: str, epochs: int) -> float:
        model = build_classifier(backbone, 3, x.shape[1], 1, None, {"dropout": 0.2}, AUGMENTATION)
        model.get_layer("backbone").trainable = True  # as in fine-tuning's phase 2
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        model.fit(x_mem, y_hot, batch_size=BATCH, epochs=1, verbose=0)  # warm-up
        started = time.perf_counter()
        model.fit(x_mem, y_hot, batch_size=BATCH, epochs=epochs, verbose=0)
        return epochs * n / (time.perf_counter() - started)

    small_cnn = train_rate("small_cnn", 2)
    mobilenet = train_rate("mobilenet_v2", 1)
    return {
        "input.images_per_second_plain": round(plain_rate, 1),
        "input.images_per_second_augmented": round(input_rate, 1),
        "input.model_train_images_per_second": round(small_cnn, 1),
        "input.throughput_ratio": round(input_rate / small_cnn, 2),
        "input.mobilenet_v2_train_images_per_second": round(mobilenet, 1),
        "input.throughput_ratio_mobilenet_v2": round(input_rate / mobilenet, 2),
        "input.model": f"small_cnn 128 px grayscale, batch {BATCH}, base trainable",
    }
